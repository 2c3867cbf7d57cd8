"""Profiling a phone end to end through toolchain's runner, against the loopback test device."""

import pytest
from loopback_adbd import Faults, LoopbackDevice, fake_elf
from test_latency import Tiny

from android_bench.adb import load_signer
from toolchain.errors import ToolchainError
from toolchain.graph import analyze
from toolchain.latency.android import AndroidRunner
from toolchain.latency.profiler import profile, shapes_to_profile
from toolchain.latency.table import LatencyTable

FAST = dict(warmup_runs=1, num_runs=3, warmup_min_secs=0, retry_wait_s=0.05, poll_s=0.05)


@pytest.fixture
def setup(tmp_path):
    key = tmp_path / "adbkey"
    load_signer(key)
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(fake_elf("arm64-v8a"))
    return key, binary


def runner(phone, key, binary):
    return AndroidRunner("pixel", [phone.serial], benchmark_binary=str(binary), key_path=key, on_cooldown=lambda *a: None, **FAST)


def test_profile_on_a_phone_builds_a_table_resumes_and_survives_a_disconnect(tmp_path, setup):
    key, binary = setup
    graph = analyze(Tiny(), 16)
    wanted = shapes_to_profile(graph)
    path = tmp_path / "pixel.json"
    faults = Faults(drop_at_run=4)  # the link drops during the fourth benchmark run
    with LoopbackDevice(tmp_path / "phone", [(key.parent / "adbkey.pub").read_text()], model="Pixel 6", faults=faults) as phone:
        first = runner(phone, key, binary)
        assert first.target.device == "pixel" and first.target.fingerprint.startswith("Pixel 6|arm64-v8a")
        table = LatencyTable.open(path, first.target)
        result = profile(graph, first, table)
        assert result.measured == len(wanted)
        saved = LatencyTable.open(path, first.target)
        assert set(saved.entries) == set(wanted) and all(t.median_ms > 0 for t in saved.entries.values())
        assert all(t.temperatures_c for t in saved.entries.values())  # recorded with each measurement
        runs = phone.runs
        again = profile(graph, runner(phone, key, binary), LatencyTable.open(path, first.target))
        assert again.measured == 0 and phone.runs == runs  # a second run measures nothing new


def test_phone_errors_are_one_line(tmp_path, setup, monkeypatch):
    key, binary = setup
    monkeypatch.delenv("TOOLCHAIN_BENCHMARK_MODEL", raising=False)
    with pytest.raises(ToolchainError, match="no benchmark_model binary .* --benchmark-binary"):
        AndroidRunner("pixel", ["127.0.0.1:9"], key_path=key)
    with LoopbackDevice(tmp_path / "phone", [(key.parent / "adbkey.pub").read_text()], abi="x86_64") as phone:
        with pytest.raises(ToolchainError) as excinfo:
            runner(phone, key, binary)
        message = str(excinfo.value)
        assert "\n" not in message and ("arm64" in message or "ABI" in message)

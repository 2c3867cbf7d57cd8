"""Profiling a phone end to end through toolchain's runner, against the loopback test device; with no binary given,
the pinned benchmark_model comes from a loopback HTTP server standing in for LiteRT's."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from loopback_adbd import Faults, LoopbackDevice, fake_elf
from test_android_binary import PATH, FileServer, sha256, write_manifest
from test_latency import Tiny

from android_bench.adb import connect, load_signer
from android_bench.runner import InstalledBinary, installed_binary
from toolchain.cli import main
from toolchain.errors import ToolchainError
from toolchain.graph import analyze
from toolchain.latency.android import AndroidRunner
from toolchain.latency.profiler import CALIBRATION_RATIOS, CALIBRATION_REPEATS, profile, shapes_to_profile
from toolchain.latency.table import LatencyTable
from toolchain.models import create_model

FAST = dict(warmup_runs=1, num_runs=3, warmup_min_secs=0, retry_wait_s=0.05, poll_s=0.05)


@pytest.fixture
def setup(tmp_path):
    key = tmp_path / "adbkey"
    load_signer(key)
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(fake_elf("arm64-v8a"))
    return key, binary


def runner(phone, key, binary):
    return AndroidRunner(
        "pixel", [phone.serial], benchmark_binary=str(binary), key_path=key, on_cooldown=lambda *a: None, **FAST
    )


def test_profile_on_a_phone_builds_a_table_resumes_and_survives_a_disconnect(tmp_path, setup):
    key, binary = setup
    graph = analyze(Tiny(), 16)
    wanted = shapes_to_profile(graph)
    path = tmp_path / "pixel.json"
    faults = Faults(drop_at_run=4)  # the link drops during the fourth benchmark run
    with LoopbackDevice(
        tmp_path / "phone", [(key.parent / "adbkey.pub").read_text()], model="Pixel 6", faults=faults
    ) as phone:
        first = runner(phone, key, binary)
        assert first.target.device == "pixel"
        assert dict(first.target.machine) == {
            "model": "Pixel 6",
            "soc": "Loopback SoC",
            "abi": "arm64-v8a",
            "android": "14",
            "build": "LOOP.1",
        }
        table = LatencyTable.open(path, first.target)
        result = profile(graph, first, table)
        assert result.measured == len(wanted)
        saved = LatencyTable.open(path, first.target)
        assert set(saved.entries) == set(wanted)
        # benchmark_model reports whole microseconds: the smallest ops may read 0, the convolutions never
        assert all(t.median_ms >= 0 for t in saved.entries.values())
        assert all(t.median_ms > 0 for s, t in saved.entries.items() if s.kind == "CONV_2D")
        assert all(t.temperatures_c for t in saved.entries.values())  # recorded with each measurement
        runs = phone.runs
        again = profile(graph, runner(phone, key, binary), LatencyTable.open(path, first.target))
        assert again.measured == 0 and phone.runs == runs  # a second run measures nothing new


def test_phone_errors_are_one_line_and_come_in_the_order_a_user_meets_them(tmp_path, setup, monkeypatch):
    key, binary = setup
    monkeypatch.delenv("TOOLCHAIN_BENCHMARK_MODEL", raising=False)
    monkeypatch.setenv("TOOLCHAIN_CACHE", str(tmp_path / "cache"))
    pub = [(key.parent / "adbkey.pub").read_text()]

    def error(*args, **options) -> str:
        with pytest.raises(ToolchainError) as excinfo:
            AndroidRunner(*args, key_path=key, on_cooldown=lambda *a: None, **options, **FAST)
        assert "\n" not in str(excinfo.value)
        return str(excinfo.value)

    assert "cannot reach 127.0.0.1:9" in error("pixel", ["127.0.0.1:9"])  # the phone first, binary or not
    with LoopbackDevice(tmp_path / "x86", pub, abi="x86_64") as phone:  # then its ABI against the profile
        assert "device profile 'pixel' is for arm64-v8a" in error("pixel", [phone.serial])
        assert "no benchmark_model download for a phone running x86_64" in error("android", [phone.serial])
    with LoopbackDevice(tmp_path / "arm", pub) as phone:  # then the binary: the shipped manifest pins no checksum
        message = error("pixel", [phone.serial])
        assert "benchmark_model 2.2.0 for arm64-v8a has no pinned sha256" in message
        assert str(tmp_path / "cache" / "benchmark_model" / "2.2.0" / "arm64-v8a" / "benchmark_model") in message
        assert "built for x86_64" in error("pixel", [phone.serial], benchmark_binary=str(wrong_build(tmp_path)))


def wrong_build(tmp_path: Path) -> Path:
    path = tmp_path / "x86_64_benchmark_model"
    path.write_bytes(fake_elf("x86_64"))
    return path


def test_make_profile_out_of_the_box_fetches_the_pinned_binary_for_the_phone(tmp_path, monkeypatch, capsys):
    """`toolchain profile --device pixel` with no --benchmark-binary: the phone is found, its ABI read, and the
    build the manifest pins for it downloaded (from a mirror), checked, cached and pushed; it is LiteRT's tool."""
    key = tmp_path / "home" / ".android" / "adbkey"
    load_signer(key)
    monkeypatch.setattr("android_bench.adb.DEFAULT_KEY", key)
    for name in ("TOOLCHAIN_BENCHMARK_MODEL", "ANDROID_SERIAL"):
        monkeypatch.delenv(name, raising=False)
    elf = fake_elf("arm64-v8a")
    server = FileServer({f"/litert/{PATH}": elf})
    monkeypatch.setenv("TOOLCHAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TOOLCHAIN_BENCHMARK_MODEL_URL", server.url)
    monkeypatch.setenv("TOOLCHAIN_BENCHMARK_MODEL_MANIFEST", str(write_manifest(tmp_path, sha256(elf))))
    table = tmp_path / "pixel.json"
    argv = [
        "profile",
        "--device",
        "pixel",
        "--model",
        "plain20",
        "--channel-step",
        "64",
        "--table",
        str(table),
        "--json",
    ]
    pub = [(key.parent / "adbkey.pub").read_text()]
    with LoopbackDevice(tmp_path / "phone", pub, model="Pixel 6", benchmark_dialect="litert") as phone:
        assert main(["devices", "--serial", phone.serial]) == 0
        assert "Pixel 6 (arm64-v8a" in (listed := capsys.readouterr().out) and "no benchmark_model yet" in listed
        try:
            assert main([*argv, "--serial", phone.serial]) == 0, capsys.readouterr().err
        finally:
            server.stop()
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out["measured"] == out["shapes"] > 0 and LatencyTable.load(table).entries
        assert server.requests == [f"/litert/{PATH}"]
        cached = tmp_path / "cache" / "benchmark_model" / "9.9.9" / "arm64-v8a" / "benchmark_model"
        assert cached.read_bytes() == elf and (phone.root / "data/local/tmp/benchmark_model").read_bytes() == elf
        holds = installed_binary(connect(phone.serial, key_path=key))
        assert holds == InstalledBinary("9.9.9", "litert", sha256(elf), verified=True)
        assert main(["devices", "--serial", phone.serial]) == 0
        assert "benchmark_model 9.9.9 (litert, verified)" in capsys.readouterr().out
        runs = [s for s in phone.services if "--graph=" in s]
        assert runs and not any("--use_xnnpack" in s for s in runs)  # LiteRT's tool has no such flag
        # offline now (the server is stopped): the checked copy in the cache is enough to check the table on the phone
        assert main([*argv, "--serial", phone.serial]) == 0, capsys.readouterr().err
        assert len([s for s in phone.services if "--graph=" in s]) > len(runs)


def toolchain_env(tmp_path, key, binary, **extra) -> dict:
    """The environment a user's shell would have: the adb key in ~/.android, the benchmark binary configured."""
    home = key.parent.parent
    return {**os.environ, "HOME": str(home), "TOOLCHAIN_BENCHMARK_MODEL": str(binary), **extra}


@pytest.fixture
def user_key(tmp_path):
    key = tmp_path / "home" / ".android" / "adbkey"
    load_signer(key)
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(fake_elf("arm64-v8a"))
    return key, binary


def measured_so_far(table: Path) -> set[str]:
    """Op keys in the saved table and its journal (what a killed profile keeps)."""
    journal = table.with_name(table.name + ".journal")
    saved = {s.key() for s in LatencyTable.load(table).entries} if table.exists() else set()
    lines = journal.read_text().splitlines() if journal.exists() else []
    return saved | {r["op"] for r in map(json.loads, filter(lambda line: line.endswith("}"), lines)) if "op" in r}


@pytest.mark.slow
def test_make_profile_on_a_phone_resumes_after_a_kill_and_loses_nothing_to_a_disconnect(tmp_path, user_key):
    key, binary = user_key
    table = tmp_path / "pixel.json"
    graph = analyze(create_model("resnet20"), 32)
    wanted = {s.key() for s in shapes_to_profile(graph, channel_step=32)}
    with LoopbackDevice(tmp_path / "phone", [(key.parent / "adbkey.pub").read_text()], model="Pixel 6") as phone:
        env = toolchain_env(tmp_path, key, binary, ANDROID_SERIAL=phone.serial)
        make = [
            "make",
            "-C",
            str(REPO),
            "--no-print-directory",
            "profile",
            "DEVICE=pixel",
            "MODEL=resnet20",
            f"PROFILE_ARGS=--channel-step 32 --table {table} --trust-table",  # count runs: no table check
        ]
        # 1. killed part-way (the whole process group, as Ctrl-C or a closed laptop lid would)
        proc = subprocess.Popen(
            make, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and len(measured_so_far(table)) < 6:
            time.sleep(0.05)
        assert proc.poll() is None, f"profile ended before it could be killed: {proc.stderr.read()[-800:]}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kept = measured_so_far(table)
        assert 6 <= len(kept) < len(wanted)

        # 2. rerun: the link drops during its third benchmark run; it reconnects and finishes, measuring only what
        # is missing
        runs_before = phone.runs
        phone.faults.drop_at_run = runs_before + 3
        done = subprocess.run(make, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-1500:]
        saved = LatencyTable.load(table)
        assert wanted <= {s.key() for s in saved.entries}
        remaining = len(wanted - kept)
        calibration_runs = len(CALIBRATION_RATIOS) * CALIBRATION_REPEATS  # whole models, the fastest run of each
        # TFLite's tool here reports XNNPACK as one delegate node, so the first pack cannot be split into its ops
        # and every shape is timed alone: at most one run more than the missing shapes
        runs = int(
            re.search(
                rf"{remaining} new of {len(wanted)} shapes measured in (\d+) benchmark runs, 0 of them", done.stdout
            )[1]
        )
        assert runs in (remaining, remaining + 1)
        # those, the calibration models, and the one run the drop cut short
        assert phone.runs - runs_before == runs + calibration_runs + 1

        # 3. a third run has nothing left to measure
        runs_before = phone.runs
        again = subprocess.run(make, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0 and phone.runs == runs_before
        assert "0 new of" in again.stdout


@pytest.mark.slow
def test_profile_on_two_phones_measures_in_parallel_one_table_each(tmp_path, user_key):
    key, binary = user_key
    graph = analyze(create_model("resnet20"), 32)
    wanted = {s.key() for s in shapes_to_profile(graph, channel_step=64)}
    pub = [(key.parent / "adbkey.pub").read_text()]
    with (
        LoopbackDevice(tmp_path / "a", pub, model="Pixel 6") as a,
        LoopbackDevice(tmp_path / "b", pub, model="Pixel 6") as b,
    ):
        cmd = [
            sys.executable,
            "-m",
            "toolchain.cli",
            "profile",
            "--device",
            "pixel",
            "--model",
            "resnet20",
            "--channel-step",
            "64",
            "--serial",
            a.serial,
            "--serial",
            b.serial,
            "--table",
            str(tmp_path / "pixel.json"),
            "--json",
        ]
        done = subprocess.run(
            cmd, env=toolchain_env(tmp_path, key, binary), capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-1500:]
        tables = json.loads(done.stdout.strip().splitlines()[-1])["tables"]
        assert [t["serial"] for t in tables] == [a.serial, b.serial]
        assert len({t["table"] for t in tables}) == 2  # one table per phone
        for t, phone in zip(tables, (a, b)):
            entries = LatencyTable.load(t["table"]).entries
            assert wanted <= {s.key() for s in entries} and phone.runs >= len(wanted)
        # the two phones were busy at the same time
        assert min(end for _, end in a.run_spans) > min(start for start, _ in b.run_spans)
        assert min(end for _, end in b.run_spans) > min(start for start, _ in a.run_spans)

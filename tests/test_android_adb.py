"""android_bench's ADB side against the loopback test device (tests/loopback_adbd.py), with no phone attached:
the adb-shell connection and keys, Debian's stock `adb` client, and AndroidBenchmark timing real .tflite models
through faults (dropped link, heat, lost binary, full disk, slow answers), with either benchmark_model tool."""

import dataclasses
import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from loopback_adbd import Faults, LoopbackDevice, Thermal, fake_elf

from android_bench.adb import DeviceError, choose_serial, connect, load_signer
from android_bench.binary import LocalBinary
from android_bench.devices import derive_profile, load_profile
from android_bench.runner import (
    AndroidBenchmark,
    InstalledBinary,
    cat_each,
    detect_dialect,
    detect_profile,
    installed_binary,
    read_device_info,
)
from toolchain.latency.signature import OpSignature
from toolchain.latency.tflite import single_op_model

FAST = dict(warmup_runs=2, num_runs=5, warmup_min_secs=0, retry_wait_s=0.05, poll_s=0.05)


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "adbkey"
    load_signer(path)
    return path


@pytest.fixture(scope="module")
def models() -> list[bytes]:
    return [
        single_op_model(OpSignature("CONV_2D", 8, 8, 8, 8, 3, 1, "SAME", "RELU")),
        single_op_model(OpSignature("CONV_2D", 8, 8, 8, 16, 3, 1, "SAME", "RELU")),
    ]


@pytest.fixture
def binary(tmp_path) -> Path:
    path = tmp_path / "benchmark_model"
    path.write_bytes(fake_elf("arm64-v8a"))
    return path


def start_phone(tmp_path: Path, key: Path, **options) -> LoopbackDevice:
    return LoopbackDevice(tmp_path / "phone", [Path(f"{key}.pub").read_text()], **options).start()


@pytest.fixture
def phone(tmp_path, key):
    device = start_phone(tmp_path, key)
    yield device
    device.stop()


def bench(phone: LoopbackDevice, key: Path, binary: Path, **options) -> AndroidBenchmark:
    device = connect(phone.serial, key_path=key, timeout_s=5)
    runner = AndroidBenchmark(device, options.pop("profile", None) or detect_profile(device), **{**FAST, **options})
    runner.ensure_binary(binary)
    return runner


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


# --- connection ------------------------------------------------------------------------------------------------------


def test_adb_shell_generates_a_key_and_round_trips_files(tmp_path):
    key = tmp_path / "home" / ".android" / "adbkey"
    load_signer(key)
    assert key.stat().st_mode & 0o777 == 0o600 and Path(f"{key}.pub").read_text().split()[0]
    with LoopbackDevice(tmp_path / "phone", [Path(f"{key}.pub").read_text()]) as phone:
        device = connect(phone.serial, key_path=key, timeout_s=5)
        assert device.shell("echo hi; getprop ro.product.model") == "hi\nLoopback\n"
        payload = os.urandom(200_000)  # several sync DATA chunks and ADB packets
        device.push(payload, "/data/local/tmp/blob.bin")
        assert (phone.root / "data/local/tmp/blob.bin").read_bytes() == payload
        assert device.pull("/data/local/tmp/blob.bin") == payload
        mode, size, _ = device.stat("/data/local/tmp/blob.bin")
        assert (mode & 0o777, size) == (0o644, len(payload))
        assert device.stat("/data/local/tmp/missing") == (0, 0, 0)
        assert cat_each(device, ["/proc/cpuinfo", "/nope"])[1] is None
        device.close()


def test_unauthorised_key_is_refused_with_one_line(tmp_path, key):
    stranger = tmp_path / "stranger" / "adbkey"
    load_signer(stranger)
    with start_phone(tmp_path, key) as phone:
        with pytest.raises(DeviceError) as excinfo:
            connect(phone.serial, key_path=stranger, timeout_s=5, auth_timeout_s=0.5)
    assert "has not authorised" in one_line_error(excinfo) and "Allow" in str(excinfo.value)
    assert not excinfo.value.transient


def test_unreachable_phone_is_a_one_line_error(key):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connection refused
        with pytest.raises(DeviceError) as excinfo:
            connect(f"127.0.0.1:{port}", key_path=key, timeout_s=2)
    assert "cannot reach" in one_line_error(excinfo)


def test_slow_phone_works_within_the_timeout_and_fails_beyond_it(tmp_path, key):
    with start_phone(tmp_path, key, faults=Faults(delay_s=0.3)) as phone:
        assert connect(phone.serial, key_path=key, timeout_s=5).shell("echo slow") == "slow\n"
        impatient = connect(phone.serial, key_path=key, timeout_s=0.1)
        with pytest.raises(DeviceError) as excinfo:
            impatient.shell("echo slow")
    assert "did not answer in time" in one_line_error(excinfo) and excinfo.value.transient


def test_choose_serial():
    assert choose_serial(["10.0.0.7:5555"], "ENV", ["usb1"]) == "10.0.0.7:5555"
    assert choose_serial([], "ENV", ["usb1", "usb2"]) == "ENV"
    assert choose_serial([], None, ["usb1"]) == "usb1"
    for given, attached, words in (
        ([], [], "no Android device"),
        ([], ["a", "b"], "none chosen"),
        (["a", "b"], [], "pass one --serial"),
    ):
        with pytest.raises(DeviceError) as excinfo:
            choose_serial(given, None, attached)
        assert words in one_line_error(excinfo)


def test_stock_adb_client_connects_runs_and_pushes(tmp_path, key):
    """Debian's `adb`, with its own server on a private port and a private HOME (the user's server and keys are
    never touched), authenticates with an adbkey made by load_signer and falls back to legacy shell: and sync:."""
    adb = shutil.which("adb")
    if adb is None:  # `make test` installs it where it can (root on Debian); elsewhere this says how
        pytest.skip("Debian's stock adb client is not installed: `sudo apt-get install -y adb` to run this check")
    home = tmp_path / "home"
    load_signer(home / ".android" / "adbkey")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        server_port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANDROID_", "ADB_"))}
    env.update(
        HOME=str(home), ANDROID_ADB_SERVER_PORT=str(server_port), ADB_VENDOR_KEYS=str(home / ".android" / "adbkey")
    )

    def run(*args: str) -> str:
        done = subprocess.run([adb, *args], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"adb {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    local = tmp_path / "weights.bin"
    local.write_bytes(os.urandom(100_000))
    with LoopbackDevice(tmp_path / "phone", [(home / ".android" / "adbkey.pub").read_text()]) as phone:
        try:
            assert "connected to" in run("connect", phone.serial)
            run("-s", phone.serial, "wait-for-device")
            assert run("-s", phone.serial, "shell", "echo", "hi") == "hi\n"
            run("-s", phone.serial, "push", str(local), "/data/local/tmp/")
            assert (phone.root / "data/local/tmp/weights.bin").read_bytes() == local.read_bytes()
        finally:
            subprocess.run([adb, "kill-server"], env=env, capture_output=True, timeout=60)
    assert "shell:echo hi" in phone.services and "sync:" in phone.services


# --- device profiles -------------------------------------------------------------------------------------------------


def test_shipped_profiles_and_derivation(tmp_path, key):
    pixel, pixel1 = load_profile("pixel"), load_profile("pixel1")
    assert (pixel.big_cores, pixel.threads, pixel1.big_cores, pixel1.abi) == ("c0", 2, "c", "arm64-v8a")
    cpuinfo = "".join(f"processor\t: {cpu}\nCPU part\t: 0xd05\n\n" for cpu in (0, 1, 2, 3, 4, 5))  # cpu6-7 offline
    derived = derive_profile(cpuinfo, {0: 1_800_000, 4: 2_400_000, 5: 2_400_000, 7: 3_000_000}, abi="arm64-v8a")
    assert (derived.big_cores, derived.threads) == ("30", 2)
    assert derive_profile(cpuinfo, {}, abi="arm64-v8a").big_cores == "3f"
    bad = tmp_path / "bad.toml"
    bad.write_text(pixel1_text().replace("threads = 2", "threads = 3"))
    with pytest.raises(DeviceError) as excinfo:
        load_profile(bad)
    assert "threads must be" in one_line_error(excinfo)
    with pytest.raises(DeviceError) as excinfo:
        load_profile("nokia3310")
    assert "pixel" in one_line_error(excinfo)
    with start_phone(tmp_path, key, model="Pixel 6") as phone:
        assert detect_profile(connect(phone.serial, key_path=key)).name == "pixel"


def pixel1_text() -> str:
    return (Path(__file__).resolve().parents[1] / "android_bench" / "devices" / "pixel1.toml").read_text()


# --- AndroidBenchmark ------------------------------------------------------------------------------------------------


def test_times_two_real_models(phone, key, binary, models):
    runner = bench(phone, key, binary, op_profiling=True)
    assert runner.profile.big_cores == "c0"  # derived: the loopback's two fastest cores are cpu6 and cpu7
    timings = runner.time_models([models[0], models[1], models[0]])
    assert len(timings) == 3
    for timing in timings:
        assert 0 < timing.avg_us < 100_000 and timing.count == 5 and timing.std_us >= 0
        assert timing.temperatures == {"cpu-big": 30.0, "cpu-little": 30.0, "battery": 30.0}
        assert [op.type for op in timing.ops] == ["TfLiteXNNPackDelegate"]
    assert len(runner.time_models([models[1]])) == 1
    runs = [s for s in phone.services if "--graph=" in s]
    assert len(runs) == 4 and runs[0].startswith("shell:taskset c0 /data/local/tmp/benchmark_model --graph=")
    assert "--num_threads=2" in runs[0] and "--num_runs=5" in runs[0]
    assert phone.services.count("shell:/data/local/tmp/benchmark_model --help") == 1  # pushed once
    assert phone.services.count("sync:") == 2 + 2 + 1  # the binary and its marker, then each distinct model per batch
    assert not list((phone.root / "data/local/tmp").glob("*.tflite"))  # each batch cleaned up


def test_each_dialect_gets_its_own_flags_and_its_op_profile_read(tmp_path, key, binary, models):
    """TFLite's tool takes --use_xnnpack and --enable_op_profiling; LiteRT's has neither (it only warns about
    them and would profile nothing) and profiles with --use_profiler, printing other tables."""
    expected = {
        "tflite": (["--use_xnnpack=true", "--enable_op_profiling=true"], "TfLiteXNNPackDelegate", 1),
        "litert": (["--use_profiler=true"], "Delegate/Convolution (NHWC, F32) IGEMM", 1),
    }
    for dialect, (flags, op_type, calls) in expected.items():
        with start_phone(tmp_path / dialect, key, benchmark_dialect=dialect) as phone:
            runner = bench(phone, key, binary, op_profiling=True)
            timings = runner.time_models(models)
            assert runner.dialect.name == dialect
            run = next(s for s in phone.services if "--graph=" in s)
            assert [arg for arg in run.split() if arg.startswith("--use_") or "profil" in arg] == flags
            for timing in timings:
                assert 0 < timing.avg_us < 100_000 and timing.count == 5
                assert [(op.type, op.times_called) for op in timing.ops] == [(op_type, calls)]


def test_unknown_dialect_is_a_one_line_error_naming_what_it_saw(tmp_path, binary):
    class OldToolPhone:
        """A phone holding the 2018 tool: its usage has neither dialect's profiling flag."""

        serial = "old-phone"

        def shell(self, command: str, timeout_s: float | None = None) -> str:
            if command.startswith("getprop"):
                return "Pixel\narm64-v8a\narm64-v8a,armeabi-v7a\n9\n"
            if command.endswith("--help"):
                return (
                    "usage: benchmark_model\nFlags:\n\t--graph=\tstring\toptional\tgraph file name\n"
                    "\t--input_layer_shape=\tstring\toptional\tinput layer shape\n"
                    "\t--use_nnapi=false\tbool\toptional\tuse nnapi api\n"
                )
            return ""

        def push(self, data: bytes, remote: str, executable: bool = False) -> None:
            pass

    runner = AndroidBenchmark(OldToolPhone(), load_profile("pixel"), **FAST)
    with pytest.raises(DeviceError) as excinfo:
        runner.ensure_binary(binary)
    message = one_line_error(excinfo)
    assert "its --help lists --graph, --input_layer_shape, --use_nnapi but neither --enable_op_profiling" in message
    assert detect_dialect("\t--use_profiler=false\tbool\toptional\tWhether to use profiler.").name == "litert"
    assert detect_dialect("\t--enable_op_profiling=false\tbool\toptional\tenable op profiling").name == "tflite"


def test_installed_binary_says_what_the_phone_holds(phone, key, binary):
    device = connect(phone.serial, key_path=key)
    assert installed_binary(device) is None
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    bench(phone, key, binary)  # a build of the user's: not checked against a pin
    assert installed_binary(device) == InstalledBinary(None, "tflite", digest, verified=False)
    bench(phone, key, LocalBinary(binary, "2.2.0", pinned=True))  # as fetched and checked against the manifest
    assert installed_binary(device) == InstalledBinary("2.2.0", "tflite", digest, verified=True)
    (phone.root / "data/local/tmp/benchmark_model").write_bytes(binary.read_bytes() + b"changed")
    changed = installed_binary(device)
    assert changed.version == "2.2.0" and changed.sha256 != digest and not changed.verified


def test_dropped_connection_is_recovered_without_losing_results(phone, key, binary, models):
    phone.faults.drop_at_run = 2  # the second model's run loses the link half-way
    timings = bench(phone, key, binary).time_models(models)
    assert [t.count for t in timings] == [5, 5]
    assert phone.runs == 3  # the first model was not measured again


def test_lost_binary_is_pushed_again(phone, key, binary, models):
    runner = bench(phone, key, binary)
    phone.faults.lose_binary = 1
    assert len(runner.time_models(models[:1])) == 1
    assert phone.services.count("shell:/data/local/tmp/benchmark_model --help") == 2


def test_hot_phone_waits_until_cool(tmp_path, key, binary, models):
    waits = []
    with start_phone(tmp_path, key, thermal=Thermal(ambient_c=30, heat_per_run_c=20, cool_c_per_s=50)) as phone:
        device = connect(phone.serial, key_path=key)
        profile = dataclasses.replace(detect_profile(device), max_temp_c=40, max_wait_s=5)
        runner = bench(phone, key, binary, profile=profile, on_cooldown=lambda *args: waits.append(args))
        timings = runner.time_models(models)
    assert waits and all(hottest > 40 and limit == 40 and 0 < left <= 5 for hottest, limit, left in waits)
    assert all(max(t.temperatures.values()) <= 40 for t in timings)


def test_always_hot_phone_gives_up_after_the_max_wait(tmp_path, key, binary, models):
    waits = []
    with start_phone(tmp_path, key, thermal=Thermal(ambient_c=90)) as phone:
        profile = dataclasses.replace(detect_profile(connect(phone.serial, key_path=key)), max_wait_s=0.3)
        runner = bench(phone, key, binary, profile=profile, on_cooldown=lambda *args: waits.append(args))
        with pytest.raises(DeviceError) as excinfo:
            runner.time_models(models[:1])
    assert "still at 90.0 C after 0.3 s" in one_line_error(excinfo) and waits


def test_missing_and_wrong_binaries_are_one_line_errors(phone, key, tmp_path):
    device = connect(phone.serial, key_path=key)
    runner = AndroidBenchmark(device, detect_profile(device), **FAST)
    with pytest.raises(DeviceError) as excinfo:
        runner.ensure_binary(tmp_path / "nowhere" / "benchmark_model")
    message = one_line_error(excinfo)
    assert "LiteRT" in message and "--benchmark-binary" in message
    assert "//tflite/tools/benchmark:benchmark_model" in message
    for content, words in ((fake_elf("x86_64"), "built for x86_64"), (b"#!/bin/sh\necho hi\n", "no ELF header")):
        wrong = tmp_path / "wrong_benchmark_model"
        wrong.write_bytes(content)
        with pytest.raises(DeviceError) as excinfo:
            runner.ensure_binary(wrong)
        assert words in one_line_error(excinfo)
    assert not (phone.root / "data/local/tmp/benchmark_model").exists()  # refused before pushing


def test_full_disk_push_is_a_one_line_error(phone, key, binary):
    phone.faults.disk_full = True
    with pytest.raises(DeviceError) as excinfo:
        bench(phone, key, binary)
    message = one_line_error(excinfo)
    assert "No space left on device" in message and "free some storage" in message and not excinfo.value.transient


def test_device_info(phone, key):
    info = read_device_info(connect(phone.serial, key_path=key))
    assert (info.model, info.abi, info.android) == ("Loopback", "arm64-v8a", "14")
    assert info.abis == ("arm64-v8a", "armeabi-v7a", "armeabi")


def test_android_bench_imports_nothing_from_toolchain():
    code = (
        "import sys, android_bench.adb, android_bench.binary, android_bench.devices, android_bench.runner, "
        "android_bench.parse; print(sorted(m for m in sys.modules if m.split('.')[0] == 'toolchain'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.stdout.strip() == "[]"

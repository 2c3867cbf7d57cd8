"""Time `.tflite` models on a phone with LiteRT's `benchmark_model`.

`AndroidBenchmark` pushes the benchmark binary once, pushes each batch of models, and runs

    taskset MASK /data/local/tmp/benchmark_model --graph=... --num_threads=N --warmup_runs=... --num_runs=...

on the profile's big cores, every argument shell-quoted. Before each measurement it waits (showing a countdown)
while any thermal zone is hotter than the profile allows, and records the temperatures it measured at. Transient
failures (a dropped USB or Wi-Fi link, a cut-off output, the binary wiped from /data/local/tmp) are retried after
reconnecting; results already measured are kept.

Two tools go by the name benchmark_model and take different flags (`Dialect`): which one was pushed is read from
its --help on the phone. A marker file pushed beside it records that, its sha256 and where it came from, so that
`installed_binary` can tell later what a phone holds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from .adb import Device, DeviceError
from .binary import LocalBinary, elf_abi
from .devices import DeviceProfile, derive_profile, profile_for_model
from .parse import BenchmarkLog, OpTiming, UnparsedOutput, parse_log

WORKDIR = "/data/local/tmp"
BINARY = f"{WORKDIR}/benchmark_model"
MARKER = f"{WORKDIR}/benchmark_model.json"  # what was pushed as BINARY: sha256, version, pinned, dialect
THERMAL = "/sys/class/thermal"
GET_BINARY = (
    "get benchmark_model for Android from the LiteRT / TensorFlow Lite releases "
    "(android_aarch64_benchmark_model) or build it with `bazel build -c opt --config=android_arm64 "
    "//tflite/tools/benchmark:benchmark_model`, and pass --benchmark-binary PATH"
)
_SEPARATOR = "--android-bench-end-of-file--"
T = TypeVar("T")


@dataclass(frozen=True)
class ModelTiming:
    """One model's measurement: mean and spread of the timed runs (microseconds), the thermal zones' temperatures
    (C) just before the run, and the per-op rows when op profiling was on."""

    avg_us: float
    std_us: float | None
    count: int | None
    temperatures: Mapping[str, float]
    ops: tuple[OpTiming, ...]


@dataclass(frozen=True)
class Dialect:
    """The flags of one of the two benchmark_model tools. TFLite's (//tflite/tools/benchmark) takes --use_xnnpack and
    profiles ops with --enable_op_profiling; LiteRT's CompiledModel tool (//litert/tools, the one LiteRT publishes
    per version) always runs the CPU through XNNPACK and profiles with --use_profiler. Each tool only warns about a
    flag it does not know and carries on, so the wrong flags would go unnoticed: the dialect is told by a flag only
    its tool lists in --help (`marker`)."""

    name: str
    marker: str
    cpu_flags: tuple[str, ...]
    op_profiling_flag: str


DIALECTS = (
    Dialect("tflite", "--enable_op_profiling=", ("--use_xnnpack=true",), "--enable_op_profiling=true"),
    Dialect("litert", "--use_profiler=", (), "--use_profiler=true"),
)


def detect_dialect(help_text: str) -> Dialect | None:
    return next((dialect for dialect in DIALECTS if dialect.marker in help_text), None)


@dataclass(frozen=True)
class InstalledBinary:
    """The benchmark_model on a phone, as the marker pushed beside it describes it."""

    version: str | None  # the manifest version it was downloaded as; None for a build the user gave, or no marker
    dialect: str | None  # "tflite" or "litert"; None without a marker
    sha256: str | None  # of the file on the phone; None when the phone has no sha256sum
    verified: bool  # it matched a pinned checksum before it was pushed, and the phone's file still matches it


@dataclass(frozen=True)
class DeviceInfo:
    model: str
    abi: str
    abis: tuple[str, ...]  # every ABI the phone runs, primary first
    android: str
    soc: str = ""  # ro.soc.model (Android 12+), else the board platform
    build: str = ""  # ro.build.id: a system update changes it, and with it the kernels and their speed


def read_device_info(device: Device) -> DeviceInfo:
    keys = (
        "ro.product.model",
        "ro.product.cpu.abi",
        "ro.product.cpu.abilist",
        "ro.build.version.release",
        "ro.soc.model",
        "ro.board.platform",
        "ro.build.id",
    )
    values = (device.shell("; ".join(f"getprop {key}" for key in keys)).split("\n") + [""] * len(keys))[: len(keys)]
    model, abi, abilist, android, soc, platform, build = (value.strip() for value in values)
    return DeviceInfo(model, abi, tuple(filter(None, abilist.split(","))) or (abi,), android, soc or platform, build)


def cat_each(device: Device, paths: Sequence[str]) -> list[str | None]:
    """The contents of several small device files in one round trip; None for each one that cannot be read."""
    command = "; ".join(f"cat {shlex.quote(path)}; echo {_SEPARATOR}" for path in paths)
    chunks = device.shell(command).split(_SEPARATOR + "\n")[: len(paths)]
    return [None if chunk.startswith("cat: ") else chunk for chunk in chunks]


def detect_profile(device: Device) -> DeviceProfile:
    """The shipped profile for the phone's model, else one derived from its CPUs' maximum frequencies."""
    info = read_device_info(device)
    profile = profile_for_model(info.model)
    if profile is not None:
        return profile
    cpuinfo = cat_each(device, ["/proc/cpuinfo"])[0] or ""
    cpus = [int(line.split(":")[1]) for line in cpuinfo.splitlines() if line.startswith("processor")]
    freqs = cat_each(device, [f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq" for cpu in cpus])
    khz = {cpu: int(text) for cpu, text in zip(cpus, freqs) if text and text.strip().isdigit()}
    return derive_profile(cpuinfo, khz, abi=info.abi, model=info.model)


def installed_binary(device: Device) -> InstalledBinary | None:
    """The benchmark_model the phone holds, None if none: the marker pushed with it, and the file's sha256 computed
    on the phone (toybox sha256sum) to tell whether it is still the file that was checked."""
    if not device.stat(BINARY)[0]:
        return None
    text = cat_each(device, [MARKER])[0]
    try:
        marker = json.loads(text) if text else {}
    except ValueError:  # not a marker this package wrote
        marker = {}
    found = re.match(r"([0-9a-f]{64})\s", device.shell(f"sha256sum {shlex.quote(BINARY)}"))
    sha256 = found.group(1) if found else None
    verified = bool(marker.get("pinned")) and sha256 is not None and sha256 == marker.get("sha256")
    return InstalledBinary(marker.get("version"), marker.get("dialect"), sha256, verified)


def print_countdown(hottest_c: float, limit_c: float, seconds_left: float) -> None:
    print(
        f"phone at {hottest_c:.1f} C, above {limit_c:g} C: cooling down (giving up in {seconds_left:.0f} s)",
        file=sys.stderr,
        flush=True,
    )


class AndroidBenchmark:
    """Times models on a connected phone under a device profile. `warmup_min_secs` keeps the warm-up long enough
    for the CPU governor to reach full clock even for tiny models; `min_secs` is 0 so that `num_runs` is the number
    of timed runs (the tool's default of 1 s per model would dominate profiling many small ops)."""

    def __init__(
        self,
        device: Device,
        profile: DeviceProfile,
        *,
        threads: int | None = None,
        warmup_runs: int = 20,
        num_runs: int = 50,
        warmup_min_secs: float = 0.5,
        min_secs: float = 0.0,
        op_profiling: bool = False,
        retries: int = 2,
        retry_wait_s: float = 1.0,
        poll_s: float = 2.0,
        run_timeout_s: float = 600.0,
        on_cooldown: Callable[[float, float, float], None] = print_countdown,
    ):
        self.device, self.profile = device, profile
        self.threads = threads or profile.threads
        self.warmup_runs, self.num_runs = warmup_runs, num_runs
        self.warmup_min_secs, self.min_secs, self.op_profiling = warmup_min_secs, min_secs, op_profiling
        self.retries, self.retry_wait_s, self.poll_s = retries, retry_wait_s, poll_s
        self.run_timeout_s, self.on_cooldown = run_timeout_s, on_cooldown
        self.binary: LocalBinary | None = None
        self.dialect: Dialect | None = None  # known once the binary has run on the phone
        self._info: DeviceInfo | None = None
        self._installed = False
        self._zones: list[tuple[str, str]] | None = None

    # --- the binary --------------------------------------------------------------------------------------------

    def phone_info(self) -> DeviceInfo:
        """The phone's model and ABIs (read once), refusing a device profile written for another ABI."""
        if self._info is None:
            info = self._retrying(lambda: read_device_info(self.device))
            if self.profile.abi not in info.abis:
                raise DeviceError(
                    f"device profile '{self.profile.name}' is for {self.profile.abi} but "
                    f"{self.device.serial} ({info.model}) runs {', '.join(info.abis)}: choose the "
                    f"profile for this phone"
                )
            self._info = info
        return self._info

    def ensure_binary(self, binary: LocalBinary | str | Path) -> None:
        """Push benchmark_model (a path is a build of the user's) to the phone, once per instance, after checking
        locally that it is an ELF for an ABI the phone runs; then check that it really executes there and learn its
        dialect."""
        if not isinstance(binary, LocalBinary):
            binary = LocalBinary(Path(binary).expanduser())
        if self._installed and binary == self.binary:
            return
        path = binary.path
        if not path.is_file():
            raise DeviceError(f"benchmark_model not found at {path}: {GET_BINARY}")
        abi = elf_abi(path.read_bytes()[:20])
        info = self.phone_info()
        if abi is None:
            raise DeviceError(f"{path} is not an executable (no ELF header): {GET_BINARY}")
        if abi not in info.abis:
            raise DeviceError(
                f"{path} is built for {abi} but {self.device.serial} ({info.model}) runs "
                f"{', '.join(info.abis)}: {GET_BINARY}"
            )
        self.binary = binary
        self._retrying(self._install)

    def _install(self) -> None:
        data = self.binary.path.read_bytes()
        self.device.push(data, BINARY, executable=True)
        self.device.shell(f"chmod 755 {shlex.quote(BINARY)}")
        output = self.device.shell(f"{shlex.quote(BINARY)} --help")
        if "--graph" not in output:
            first = next((line for line in output.splitlines() if line.strip()), "no output")
            raise DeviceError(f"{self.binary.path} does not run on {self.device.serial}: {first.strip()}")
        self.dialect = detect_dialect(output)
        if self.dialect is None:
            flags = list(dict.fromkeys(re.findall(r"--\w+(?==)", output)))
            shown = ", ".join(flags[:8]) + (", ..." if len(flags) > 8 else "")
            raise DeviceError(
                f"{self.binary.path} is a benchmark_model this package cannot drive: its --help lists "
                f"{shown} but neither --enable_op_profiling (TFLite's tool) nor --use_profiler "
                f"(LiteRT's): pass a TFLite or LiteRT build with --benchmark-binary PATH"
            )
        marker = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "version": self.binary.version,
            "pinned": self.binary.pinned,
            "dialect": self.dialect.name,
        }
        self.device.push(json.dumps(marker).encode(), MARKER)
        self._installed = True

    # --- measuring ---------------------------------------------------------------------------------------------

    def time_models(
        self, models: Sequence[bytes], op_profiling: bool | None = None, passes: tuple[int, int] | None = None
    ) -> list[ModelTiming]:
        """Each model's timing, in order, with per-op rows when `op_profiling`, over `passes` (warm-up runs, timed
        runs); both default to what the benchmark was constructed with. Identical models are pushed once; the batch
        is removed afterwards."""
        profiling = self.op_profiling if op_profiling is None else op_profiling
        passes = passes or (self.warmup_runs, self.num_runs)
        if self.binary is None:
            raise DeviceError(f"no benchmark_model on {self.device.serial} yet: {GET_BINARY}")
        remote = {model: f"{WORKDIR}/android_bench_{hashlib.sha1(model).hexdigest()[:16]}.tflite" for model in models}
        try:
            self._retrying(partial(self._push_batch, remote))
            return [self._retrying(partial(self._measure, remote[model], profiling, passes)) for model in models]
        finally:
            self._remove(list(remote.values()))

    def _push_batch(self, remote: Mapping[bytes, str]) -> None:
        for model, path in remote.items():
            self.device.push(model, path)

    def _measure(self, remote_model: str, op_profiling: bool, passes: tuple[int, int]) -> ModelTiming:
        if not self._installed:
            self._install()
        temperatures = self._cool_down()
        output = self.device.shell(self._command(remote_model, op_profiling, passes), timeout_s=self.run_timeout_s)
        log = self._parse(output, remote_model)
        return ModelTiming(log.inference_avg_us, log.std_us, log.count, temperatures, tuple(log.ops))

    def _command(self, remote_model: str, op_profiling: bool, passes: tuple[int, int]) -> str:
        args = [
            "taskset",
            self.profile.big_cores,
            BINARY,
            f"--graph={remote_model}",
            f"--num_threads={self.threads}",
            f"--warmup_runs={passes[0]}",
            f"--num_runs={passes[1]}",
            f"--warmup_min_secs={self.warmup_min_secs:g}",
            f"--min_secs={self.min_secs:g}",
            *self.dialect.cpu_flags,
        ]
        if op_profiling:
            args.append(self.dialect.op_profiling_flag)
        return " ".join(shlex.quote(arg) for arg in args)

    def _parse(self, output: str, remote_model: str) -> BenchmarkLog:
        lines = output.splitlines()
        if any(BINARY in line and ("not found" in line or "No such file" in line) for line in lines):
            self._installed = False
            raise DeviceError(f"benchmark_model vanished from {self.device.serial}", transient=True)
        errors = [line.strip() for line in lines if line.startswith("ERROR:") and "Benchmarking failed" not in line]
        if errors or any(line.startswith(("taskset:", "/system/bin/sh:")) for line in lines):
            reason = (errors or [line for line in lines if line.strip()] or ["no output"])[0]
            raise DeviceError(f"benchmark_model failed on {remote_model}: {reason}")
        try:
            return parse_log(output)
        except UnparsedOutput as error:  # output cut short, e.g. the tool killed by the low-memory killer
            raise DeviceError(
                f"benchmark_model output for {remote_model} not understood: {error}", transient=True
            ) from None

    def _remove(self, paths: list[str]) -> None:
        """Best effort: a batch left behind by a lost connection is only disk space, and hashed names never clash."""
        try:
            self.device.shell("rm -f " + " ".join(shlex.quote(path) for path in paths))
        except DeviceError:
            pass

    def _retrying(self, step: Callable[[], T]) -> T:
        for attempt in itertools.count():
            try:
                if attempt:
                    self.device.reconnect()
                return step()
            except DeviceError as error:
                if not error.transient:
                    raise
                if attempt >= self.retries:
                    raise DeviceError(f"{error} (gave up after {self.retries} retries)", transient=True) from None
            time.sleep(self.retry_wait_s)

    # --- temperature -------------------------------------------------------------------------------------------

    def read_temperatures(self) -> dict[str, float]:
        """Degrees C per thermal zone type (the hottest zone of each type). Zones that cannot be read, or report
        nonsense (disabled sensors show 0 or -273), are left out."""
        if self._zones is None:
            names = [n for n in self.device.shell(f"ls {THERMAL}").split() if n.startswith("thermal_zone")]
            types = cat_each(self.device, [f"{THERMAL}/{name}/type" for name in names])
            self._zones = [((kind or name).strip(), f"{THERMAL}/{name}/temp") for name, kind in zip(names, types)]
        readings: dict[str, float] = {}
        for (kind, _), text in zip(self._zones, cat_each(self.device, [path for _, path in self._zones])):
            value = float(text) if text and text.strip().lstrip("-").isdigit() else 0.0
            celsius = value / 1000 if abs(value) >= 1000 else value  # most zones report millidegrees
            if 0 < celsius < 150:
                readings[kind] = max(celsius, readings.get(kind, celsius))
        return readings

    def _cool_down(self) -> dict[str, float]:
        """Wait while any zone is above the profile's limit; the temperatures finally measured are returned."""
        deadline = time.monotonic() + self.profile.max_wait_s
        while True:
            temperatures = self.read_temperatures()
            hottest = max(temperatures.values(), default=None)
            if hottest is None or hottest <= self.profile.max_temp_c:
                return temperatures
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeviceError(
                    f"{self.device.serial} is still at {hottest:.1f} C after "
                    f"{self.profile.max_wait_s:g} s of cooling down (profile '{self.profile.name}' "
                    f"allows {self.profile.max_temp_c:g} C): let it cool (out of its case, off the "
                    f"charger) or raise cooldown.max_temp_c"
                )
            self.on_cooldown(hottest, self.profile.max_temp_c, left)
            time.sleep(min(self.poll_s, left))

"""Phones as latency targets: android_bench's benchmark_model runner behind the `Runner` protocol.

Checks come in the order a user meets the problems: the phone (reachable, this computer's key authorised), its ABI
against the device profile, then the binary. The binary is the one given (--benchmark-binary, else
$TOOLCHAIN_BENCHMARK_MODEL), else the build android_bench's manifest pins for the phone's ABI, downloaded once into
$TOOLCHAIN_CACHE/benchmark_model and checked; $TOOLCHAIN_BENCHMARK_MODEL_URL names a mirror with the same layout
and $TOOLCHAIN_BENCHMARK_MODEL_MANIFEST a manifest with your own pinned checksums.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from android_bench.adb import DeviceError, attached_usb_serials, choose_serial, connect
from android_bench.binary import MANIFEST, LocalBinary, fetch_binary
from android_bench.devices import load_profile
from android_bench.runner import (
    AndroidBenchmark,
    DeviceInfo,
    ModelTiming,
    detect_profile,
    installed_binary,
    read_device_info,
)

from ..errors import ToolchainError
from .runners import Target, Timing, machine_fingerprint

BINARY_ENV = "TOOLCHAIN_BENCHMARK_MODEL"
MIRROR_ENV = "TOOLCHAIN_BENCHMARK_MODEL_URL"
MANIFEST_ENV = "TOOLCHAIN_BENCHMARK_MODEL_MANIFEST"
Z_10_90 = 1.2816  # p10/p90 of a normal distribution in standard deviations
PACK_PASSES = (2, 10)  # warm-up and timed runs over a pack of ops (a single op: the benchmark's own, 20 and 50)


def timing_of(t: ModelTiming) -> Timing:
    """benchmark_model reports the mean and standard deviation of its runs; p10/p90 assume a normal spread."""
    mean, std = t.avg_us / 1e3, (t.std_us or 0.0) / 1e3
    return Timing(
        mean, max(0.0, mean - Z_10_90 * std), mean + Z_10_90 * std, t.count or 0, dict(t.temperatures) or None
    )


def op_timings_of(t: ModelTiming, ops: int) -> list[Timing] | None:
    """Each op's time per run from a pack's op profile, in run order, with the pack's relative spread; None when the
    profile does not list exactly `ops` rows (a build whose XNNPACK reports one delegate node, or ops it fused)."""
    if len(t.ops) != ops:
        return None
    relative = (t.std_us or 0.0) / t.avg_us if t.avg_us > 0 else 0.0
    temperatures = dict(t.temperatures) or None
    return [
        Timing(ms, max(0.0, ms * (1 - Z_10_90 * relative)), ms * (1 + Z_10_90 * relative), t.count or 0, temperatures)
        for ms in (op.ms_per_run for op in t.ops)
    ]


def pinned_binary(info: DeviceInfo) -> LocalBinary:
    """The manifest's build for the phone's ABI, from the cache or downloaded into it."""
    from ..data import cache_dir  # imports torch: only when no binary is given

    return fetch_binary(
        info.abis,
        cache_dir(),
        manifest=Path(os.environ.get(MANIFEST_ENV) or MANIFEST),
        mirror=os.environ.get(MIRROR_ENV) or None,
    )


class AndroidRunner:
    model_format = "tflite"

    def __init__(
        self,
        profile_name: str,
        serials: Sequence[str] = (),
        threads: int | None = None,
        benchmark_binary: str | None = None,
        on_cooldown: Callable[[float, float, float], None] | None = None,
        key_path: Path | None = None,
        precision: str = "fp32",
        **timing,
    ):
        try:
            serial = choose_serial(list(serials), os.environ.get("ANDROID_SERIAL"), attached_usb_serials())
            self.device = connect(serial, key_path=key_path)
            profile = detect_profile(self.device) if profile_name == "android" else load_profile(profile_name)
            extra = {"on_cooldown": on_cooldown} if on_cooldown else {}
            self.bench = AndroidBenchmark(self.device, profile, threads=threads, **extra, **timing)
            info = self.bench.phone_info()
            self.bench.ensure_binary(benchmark_binary or os.environ.get(BINARY_ENV) or pinned_binary(info))
        except DeviceError as e:
            raise ToolchainError(str(e)) from None
        version = hashlib.sha1(self.bench.binary.path.read_bytes()).hexdigest()[:10]
        machine = {"model": info.model, "soc": info.soc, "abi": info.abi, "android": info.android, "build": info.build}
        self.target = Target(
            profile.name,
            "benchmark_model",
            f"sha1:{version}",
            precision,
            self.bench.threads,
            "xnnpack",
            machine_fingerprint(machine),
            tuple(sorted(machine.items())),
        )
        self.serial = serial

    def time_models(self, models: Sequence[bytes]) -> list[Timing]:
        try:
            return [timing_of(t) for t in self.bench.time_models(models)]
        except DeviceError as e:
            raise ToolchainError(str(e)) from None

    def time_op_packs(self, packs: Sequence[tuple[bytes, int]]) -> list[list[Timing] | None]:
        """Per (model, number of ops) pack, one benchmark_model run with op profiling: each op's timing, or None.
        A pass over a pack lasts as long as all its ops, so fewer passes (PACK_PASSES) time it: the warm-up's
        minimum duration still brings the clock up, and each op is still averaged over several calls."""
        passes = (min(PACK_PASSES[0], self.bench.warmup_runs), min(PACK_PASSES[1], self.bench.num_runs))
        try:
            timings = self.bench.time_models([model for model, _ in packs], op_profiling=True, passes=passes)
        except DeviceError as e:
            raise ToolchainError(str(e)) from None
        return [op_timings_of(t, ops) for t, (_, ops) in zip(timings, packs)]


def list_devices(serials: Sequence[str] = ()) -> list[dict]:
    """Every reachable phone (`serials`, $ANDROID_SERIAL and USB-attached ones): model, ABI, Android version,
    cores, device profile, temperatures and the benchmark_model it holds (None: none yet), or the one-line reason
    it cannot be used."""
    found = list(dict.fromkeys([*serials, *filter(None, [os.environ.get("ANDROID_SERIAL")]), *attached_usb_serials()]))
    rows = []
    for serial in found:
        try:
            device = connect(serial)
            info = read_device_info(device)
            profile = detect_profile(device)
            temperatures = AndroidBenchmark(device, profile).read_temperatures()
            binary = installed_binary(device)
            rows.append(
                {
                    "serial": serial,
                    "model": info.model,
                    "abi": info.abi,
                    "android": info.android,
                    "cores": int(device.shell("nproc").strip() or 0),
                    "profile": profile.name,
                    "temperatures_c": temperatures,
                    "benchmark_model": None
                    if binary is None
                    else {
                        "version": binary.version,
                        "dialect": binary.dialect,
                        "sha256": binary.sha256,
                        "verified": binary.verified,
                    },
                }
            )
            device.close()
        except DeviceError as e:
            rows.append({"serial": serial, "error": str(e)})
    return rows

"""Targets as the commands name them: `--device host|host-ort|<phone profile>|android` with its options, opened
as a `Runner`, and `bench`, which times a model file there."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ToolchainError, require
from .runners import LiteRTHostRunner, OnnxRuntimeHostRunner, Runner, Target, Timing
from .table import default_table_path

HOST_DEVICES = ("host", "host-ort")


@dataclass(frozen=True)
class TargetConfig:
    device: str = "host"  # host (LiteRT + XNNPACK), host-ort (ONNX Runtime), a phone profile name or file, android
    threads: int | None = None  # host: 1; phones: the profile's default
    serials: tuple[str, ...] = ()  # phones; several only for profiling in parallel
    benchmark_binary: str | None = None
    table: Path | None = None  # default: latency_tables/<target>.json
    precision: str = "fp32"  # of the models timed (a table per precision: int8 kernels run 3-4x faster)
    allow_busy: bool = False  # the host: time even while other processes keep its cores busy
    on_cooldown: Callable[[float, float, float], None] | None = field(default=None, compare=False)
    on_busy: Callable[[str, float], None] | None = field(default=None, compare=False)

    def __post_init__(self):
        require(self.threads is None or self.threads >= 1, f"--threads {self.threads} must be at least 1")
        require(
            self.precision in ("fp32", "fp16", "int8"), f"unknown precision {self.precision!r}: use fp32, fp16 or int8"
        )
        require(self.device != "host-ort" or self.precision == "fp32", "ONNX Runtime tables are fp32 only")
        require(
            not (self.device in HOST_DEVICES and self.serials),
            f"--serial picks phones: drop it for --device {self.device}, or use a phone profile such as --device pixel",
        )

    @property
    def is_phone(self) -> bool:
        return self.device not in HOST_DEVICES

    def table_for(self, runner: Runner) -> Path:
        return self.table if self.table is not None else default_table_path(runner.target)


def open_runner(target: TargetConfig, runs: int | None = None) -> Runner:
    """The runner for a target. `runs` fixes the number of timed runs per model (default: each runner's choice)."""
    host_timing = {"runs": runs, "min_runs": runs, "budget_s": 0.0} if runs else {}
    host_timing |= {"allow_busy": target.allow_busy, "on_wait": target.on_busy}
    if target.device == "host":
        return LiteRTHostRunner(threads=target.threads or 1, precision=target.precision, **host_timing)
    if target.device == "host-ort":
        return OnnxRuntimeHostRunner(threads=target.threads or 1, **host_timing)
    from android_bench.adb import DeviceError
    from android_bench.devices import load_profile

    from .android import AndroidRunner

    if target.device != "android":
        try:
            load_profile(target.device)
        except DeviceError as e:
            if target.device.endswith(".toml"):  # a profile file of the user's: say what is wrong in it
                raise ToolchainError(str(e)) from None
            raise ToolchainError(
                f"unknown device {target.device!r}: use host, host-ort, a phone profile (pixel, pixel1) "
                "or android (profile derived from the phone)"
            ) from None
    timing = {"num_runs": runs} if runs else {}
    cooldown = {"on_cooldown": target.on_cooldown} if target.on_cooldown else {}
    return AndroidRunner(
        target.device,
        target.serials,
        target.threads,
        target.benchmark_binary,
        **cooldown,
        precision=target.precision,
        **timing,
    )


@dataclass(frozen=True)
class BenchResult:
    file: Path
    timing: Timing  # the fastest session's
    repeats: int
    target: Target


def bench(file: Path, target: TargetConfig, runs: int = 200, repeats: int = 3) -> BenchResult:
    """End-to-end latency of a model file on the target: `repeats` fresh sessions of `runs` timed runs each, the
    fastest median kept (other load only ever slows a run down)."""
    require(runs >= 1 and repeats >= 1, f"--runs {runs} and --repeats {repeats} must each be at least 1")
    if not file.is_file():
        raise ToolchainError(f"{file} does not exist: pass a .tflite (or, with --device host-ort, .onnx) file")
    runner = open_runner(target, runs)
    if file.suffix != f".{runner.model_format}":
        raise ToolchainError(
            f"{runner.target.device} times {runner.model_format} files, not {file.name}: export with "
            f"--format {runner.model_format}"
        )
    timings = runner.time_models([file.read_bytes()] * repeats)
    return BenchResult(file, min(timings, key=lambda t: t.median_ms), repeats, runner.target)

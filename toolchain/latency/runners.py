"""Runners time `.tflite` (or ONNX) models on a target. The profiler and `bench` only see the `Runner` protocol;
the Android runner lives in android_bench and plugs in the same way."""

from __future__ import annotations

import hashlib
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from typing import Protocol

import numpy as np

from ..console import quiet_native
from ..errors import ToolchainError


@dataclass(frozen=True)
class Target:
    """What a latency was measured on. Tables for different targets are never mixed."""

    device: str
    runtime: str
    runtime_version: str
    precision: str = "fp32"
    threads: int = 1
    delegate: str = "xnnpack"
    fingerprint: str = ""  # identifies the physical machine or phone model

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def model_format(self) -> str:
        """The model files this target runs: ONNX Runtime runs .onnx, everything else .tflite."""
        return "onnx" if self.runtime == "onnxruntime" else "tflite"

    def describe(self) -> str:
        return (
            f"{self.device} ({self.fingerprint}) {self.runtime} {self.runtime_version} {self.precision} "
            f"{self.threads} thread{'s' if self.threads > 1 else ''} {self.delegate}"
        )


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    temperatures_c: dict[str, float] | None = None  # phones: thermal zones just before the run

    def as_record(self) -> dict:
        """The JSON form: fields that are not known (no temperatures on the host) are left out."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_record(cls, r: dict) -> Timing:
        return cls(r["median_ms"], r["p10_ms"], r["p90_ms"], r["runs"], r.get("temperatures_c"))

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: how noisy the measurement was."""
        return (self.p90_ms - self.p10_ms) / self.median_ms if self.median_ms > 0 else 0.0

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> Timing:
        p10, median, p90 = np.percentile(samples_ms, [10, 50, 90])
        return cls(float(median), float(p10), float(p90), len(samples_ms))


class Runner(Protocol):
    target: Target
    model_format: str  # "tflite" or "onnx": what time_models expects

    def time_models(self, models: Sequence[bytes]) -> list[Timing]:
        """End-to-end invoke latency of each model, after warm-up."""
        ...


def best_of(runner: Runner, model: bytes, repeats: int = 3) -> Timing:
    """The fastest of `repeats` measurements of one model. Other load on the machine only ever slows a run down,
    so for a whole-model figure that anchors many predictions the minimum is the robust choice."""
    return best_of_each(runner, [model], repeats)[0]


def best_of_each(runner: Runner, models: Sequence[bytes], repeats: int = 3) -> list[Timing]:
    """`best_of` for several models measured in turn (A, B, A, B, ...), so that a ratio between them (a speed-up)
    is not skewed by load that came and went between one model's measurements and the other's."""
    timings = runner.time_models(list(models) * repeats)
    return [min(timings[i :: len(models)], key=lambda t: t.median_ms) for i in range(len(models))]


def host_fingerprint() -> str:
    """CPU model, core count and architecture, hashed: tables measured on another machine are refused."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import os

    raw = f"{platform.machine()}|{cpu}|{os.cpu_count()}"
    return hashlib.sha1(raw.encode()).hexdigest()[:10]


class _HostRunner:
    """Times models in-process on this CPU.

    Each model gets a fresh session, `warmup` invokes (fewer for slow models: at most `warmup_s` seconds, at
    least 3), then timed invokes until `runs` samples or `budget_s` seconds (whichever comes first, at least
    `min_runs`). A measurement whose p10..p90 spread exceeds `max_spread` of the median is repeated (up to
    `retries` times) and the tightest one kept: on a shared machine a background burst shows up as a wide spread.
    """

    def __init__(
        self,
        threads: int = 1,
        warmup: int = 20,
        warmup_s: float = 0.05,
        runs: int = 200,
        min_runs: int = 15,
        budget_s: float = 0.3,
        max_spread: float = 0.25,
        retries: int = 2,
    ):
        self.threads, self.warmup, self.warmup_s = threads, warmup, warmup_s
        self.runs, self.min_runs, self.budget_s = runs, min_runs, budget_s
        self.max_spread, self.retries = max_spread, retries

    def time_models(self, models: Sequence[bytes]) -> list[Timing]:
        return [self.time_model(m) for m in models]

    def time_model(self, model: bytes) -> Timing:
        best = self._measure(model)
        for _ in range(self.retries):
            if best.spread <= self.max_spread:
                break
            again = self._measure(model)
            best = again if again.spread < best.spread else best
        return best

    def _session(self, model: bytes) -> Callable[[], object]:
        """Load `model` with random inputs bound; return the zero-argument call to time."""
        raise NotImplementedError

    def _measure(self, model: bytes) -> Timing:
        try:
            invoke = self._session(model)
        except Exception as e:  # each runtime has its own error types; all mean the file is not a model it runs
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ToolchainError(
                f"{self.target.runtime} cannot load the model ({reason}): pass a file written by "
                "`toolchain export` for this device"
            ) from None
        deadline = time.perf_counter() + self.warmup_s
        for i in range(self.warmup):
            invoke()
            if i >= 2 and time.perf_counter() > deadline:
                break
        samples = []
        deadline = time.perf_counter() + self.budget_s
        while len(samples) < self.runs and (len(samples) < self.min_runs or time.perf_counter() < deadline):
            t0 = time.perf_counter()
            invoke()
            samples.append((time.perf_counter() - t0) * 1e3)
        return Timing.from_samples(samples)


class LiteRTHostRunner(_HostRunner):
    """The deployment runtime on the host: ai-edge-litert's Interpreter, whose default resolver applies XNNPACK."""

    model_format = "tflite"

    def __init__(self, threads: int = 1, **timing):
        super().__init__(threads, **timing)
        self.target = Target(
            "host", "litert", version("ai-edge-litert"), "fp32", threads, "xnnpack", host_fingerprint()
        )

    def _session(self, model: bytes) -> Callable[[], object]:
        from ai_edge_litert.interpreter import Interpreter

        with quiet_native():  # the XNNPACK delegate announces itself on stderr when it is applied
            interpreter = Interpreter(model_content=model, num_threads=self.threads)
            interpreter.allocate_tensors()
        rng = np.random.default_rng(0)
        for d in interpreter.get_input_details():
            interpreter.set_tensor(d["index"], rng.standard_normal(d["shape"]).astype(d["dtype"]))
        return interpreter.invoke


class OnnxRuntimeHostRunner(_HostRunner):
    """ONNX Runtime's CPU execution provider with its default graph optimisations, for users who deploy ONNX."""

    model_format = "onnx"

    def __init__(self, threads: int = 1, **timing):
        super().__init__(threads, **timing)
        self.target = Target("host", "onnxruntime", version("onnxruntime"), "fp32", threads, "cpu", host_fingerprint())

    def _session(self, model: bytes) -> Callable[[], object]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feeds = {
            i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
            for i in session.get_inputs()
        }
        return lambda: session.run(None, feeds)

"""Runners time `.tflite` (or ONNX) models on a target. The profiler and `bench` only see the `Runner` protocol;
the Android runner lives in android_bench and plugs in the same way."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Protocol

import numpy as np

from ..console import quiet_native
from ..errors import ToolchainError
from .signature import OpSignature
from .tflite import packed_model


@dataclass(frozen=True)
class Target:
    """What a latency was measured on. Tables for different targets are never mixed.

    `machine` describes the hardware and software the timings depend on (for the host: the CPU's vector
    extensions that XNNPACK picks kernels by, its family and model, caches and cores; for a phone: model, SoC and
    Android build); `fingerprint` is its short hash, part of the table's file name."""

    device: str
    runtime: str
    runtime_version: str
    precision: str = "fp32"
    threads: int = 1
    delegate: str = "xnnpack"
    fingerprint: str = ""
    machine: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict:
        return {**asdict(self), "machine": dict(self.machine)}

    @classmethod
    def from_dict(cls, d: dict) -> Target:
        return cls(**{**d, "machine": tuple(sorted((d.get("machine") or {}).items()))})

    @property
    def model_format(self) -> str:
        """The model files this target runs: ONNX Runtime runs .onnx, everything else .tflite."""
        return "onnx" if self.runtime == "onnxruntime" else "tflite"

    def describe(self) -> str:
        return (
            f"{self.device} ({self.fingerprint}) {self.runtime} {self.runtime_version} {self.precision} "
            f"{self.threads} thread{'s' if self.threads > 1 else ''} {self.delegate}"
        )

    def differences(self, other: Target) -> str:
        """What tells `other`'s measurements apart from this target's, as one readable phrase."""
        fields = [
            f"{f} {getattr(other, f)} there, {getattr(self, f)} here"
            for f in ("device", "runtime", "runtime_version", "precision", "threads", "delegate")
            if getattr(self, f) != getattr(other, f)
        ]
        mine, theirs = dict(self.machine), dict(other.machine)
        fields += [
            f"{k} {theirs.get(k, '-')!r} there, {mine.get(k, '-')!r} here"
            for k in sorted(set(mine) | set(theirs))
            if mine.get(k) != theirs.get(k)
        ]
        if not fields and self.fingerprint != other.fingerprint:
            fields.append(f"machine {other.fingerprint} there, {self.fingerprint} here")
        return "; ".join(fields)


def machine_fingerprint(machine: dict[str, str]) -> str:
    return hashlib.sha1(json.dumps(machine, sort_keys=True).encode()).hexdigest()[:10]


# The x86 extensions XNNPACK chooses kernels by (fp32: AVX / AVX2+FMA / AVX-512F; int8: VNNI; bf16 and fp16;
# AMX tiles): two CPUs that differ in any of them run different code.
XNNPACK_ISA = (
    "sse4_1",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512dq",
    "avx512vl",
    "avx512_vnni",
    "avx512vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "fphp",
    "asimdhp",
    "i8mm",
    "sve",
    "sve2",
    "sme",
)


def host_machine() -> dict[str, str]:
    """This computer as its latency depends on it: architecture, CPU name, family/model (the microarchitecture,
    which a hypervisor's "AMD EPYC" does not name), the vector extensions XNNPACK dispatches on, caches, cores."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", info.get("Features", "")).split())
    return {
        "arch": platform.machine(),
        "cpu": info.get("model name") or info.get("Hardware") or platform.processor() or "unknown",
        "family_model": f"{info.get('cpu family', '-')}/{info.get('model', '-')}",
        "isa": " ".join(f for f in XNNPACK_ISA if f in flags),
        "caches": _caches(),
        "cores": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
    }


def _caches() -> str:
    """e.g. 'L1d 48K L1i 32K L2 1024K L3 32768K', from sysfs (cpu0)."""
    out = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        out.append(f"L{level}{'d' if kind == 'Data' else 'i' if kind == 'Instruction' else ''} {size}")
    return " ".join(out)


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    temperatures_c: dict[str, float] | None = None  # phones: thermal zones just before the run
    load: dict[str, float] | None = None  # the host: what else ran (see HostLoad)

    def as_record(self) -> dict:
        """The JSON form: fields that are not known (no temperatures on the host) are left out."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_record(cls, r: dict) -> Timing:
        return cls(r["median_ms"], r["p10_ms"], r["p90_ms"], r["runs"], r.get("temperatures_c"), r.get("load"))

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


def host_target(runtime: str, threads: int, delegate: str, precision: str = "fp32") -> Target:
    machine = host_machine()
    return Target(
        "host",
        runtime,
        version("ai-edge-litert" if runtime == "litert" else runtime),
        precision,
        threads,
        delegate,
        machine_fingerprint(machine),
        tuple(sorted(machine.items())),
    )


@dataclass(frozen=True)
class HostLoad:
    """How busy the rest of the machine is: the 1-minute load average, and the cores that other processes kept
    busy over a short window (from /proc/stat, less this process's own time); for a multi-threaded runner, also how
    much its threads speed up a probe of small ops (`threads_speedup`, see ThreadsProbe)."""

    load_1min: float
    others_cores: float
    threads_speedup: float | None = None

    @classmethod
    def sample(cls, window_s: float = 0.25) -> HostLoad:
        def busy_and_own() -> tuple[float, float]:
            fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
            busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
            own = sum(os.times()[:2]) * os.sysconf("SC_CLK_TCK")  # this process's user + system ticks
            return busy, own

        try:
            busy0, own0 = busy_and_own()
            time.sleep(window_s)
            busy1, own1 = busy_and_own()
            load = float(Path("/proc/loadavg").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return cls(0.0, 0.0)  # no /proc (not Linux): nothing known, nothing refused
        ticks = window_s * os.sysconf("SC_CLK_TCK")
        return cls(load, max(0.0, (busy1 - busy0 - (own1 - own0)) / ticks))

    def problem(self, busy_cores: float, min_threads_speedup: float = 0.0) -> tuple[str, str] | None:
        """What makes timings now wrong and what to do about it; None when the machine is quiet enough."""
        if self.others_cores > busy_cores:
            return (
                f"this machine is busy (other processes keep {self.others_cores:.1f} of {os.cpu_count()} cores "
                f"busy, load {self.load_1min:.1f})",
                "stop them",
            )
        if self.threads_speedup is not None and self.threads_speedup < min_threads_speedup:
            return (
                f"this machine's cores are in a slow spell (the runtime's threads run a probe of small ops "
                f"{self.threads_speedup:.2f}x as fast as one thread, normally {min_threads_speedup}x or more)",
                "try again in a minute",
            )
        return None

    def as_record(self) -> dict[str, float]:
        return {"load_1min": round(self.load_1min, 2), "others_cores": round(self.others_cores, 2)} | (
            {} if self.threads_speedup is None else {"threads_speedup": round(self.threads_speedup, 2)}
        )


# A shared machine's slow spells last seconds: resnet20 timed back to back on a cloud VM ran 1.3x slower for 1-4 s
# at a time (once 2x), about a third of the time. A host timing therefore repeats its models over longer than a
# spell and keeps each one's fastest round. The cap stops a runner that takes no time; it also cuts a lone model's
# rounds (about 0.35 s each) to under 3 s, which the repeats of `best_of` lengthen again.
SPREAD_S = 6.0
MAX_ROUNDS = 8
# Where the runtime's worker threads land differs from one interpreter to the next: on a 2-core cloud VM the same
# resnet20 file ran at 0.17 or 0.27 ms (int8, 2 threads) depending on the session, while 1-thread sessions agree
# within a few percent. A multi-threaded timing therefore keeps the fastest of several sessions, as many as the
# runtime needs (`_HostRunner.sessions_per_timing`).
# A cloud VM's threads also have slow spells that no load figure shows: on a 2-core VM, for seconds to a minute at
# a time (8-30% of the time), handing each op between threads costs microseconds more. 2-thread timings of models
# of small ops then run 1.3-1.6x slower (resnet20 int8: 0.108 ms instead of 0.067; every fresh session alike)
# while 1-thread timings do not move. So before each round a multi-threaded runner times a probe of small ops at 1
# thread and at its own count, and waits while its threads speed the probe up less than they normally do.


@dataclass(frozen=True)
class ThreadsProbe:
    op: OpSignature
    copies: int
    min_speedup: float  # below what 2 threads reach outside spells, above what they reach inside


# LiteRT (XNNPACK): outside spells 2 threads ran 16 1x1 convs of 16 channels 1.29-2.09x faster (median 1.57),
# inside 0.76-0.99x.
LITERT_PROBE = ThreadsProbe(OpSignature("CONV_2D", 32, 32, 16, 16, 1, 1, "VALID", "RELU"), 16, 1.2)
# ONNX Runtime does not split so small a conv between its threads (1.0-1.08x whether in a spell or not); 4 1x1
# convs of 64 channels it does: outside spells 2 threads ran them 1.78x faster (median; 1.57 at least, away from a
# spell's edges), inside 1.10x (1.24 at most), their 2-thread time 1.6x what it was outside.
ONNXRUNTIME_PROBE = ThreadsProbe(OpSignature("CONV_2D", 32, 32, 64, 64, 1, 1, "VALID", "RELU"), 4, 1.4)


class _HostRunner:
    """Times models in-process on this CPU.

    Each model gets a fresh session (the fastest of `sessions_per_timing` with several threads), `warmup` invokes
    (fewer for slow models: at most `warmup_s` seconds, at least 3), then timed invokes until `runs` samples or
    `budget_s` seconds (whichever comes first, at least `min_runs`). A measurement whose p10..p90 spread exceeds
    `max_spread` of the median is repeated (up to `retries` times) and the tightest one kept: on a shared machine
    a background burst shows up as a wide spread.

    Timings are only as true as the quiet they were taken in: before timing, the runner looks at what else runs
    (`HostLoad`, at most every `load_every_s` seconds); while other processes keep more than `busy_cores` cores
    busy it waits (at most `wait_s`), then refuses, unless `allow_busy`; likewise while a multi-threaded runner's
    threads are in a slow spell (see ThreadsProbe, checked before every round). Each timing records the load of
    the round it was kept from.
    """

    busy_cores = 0.5
    wait_s = 60.0
    probe: ThreadsProbe | None = None  # the runtime's own, timed only with several threads
    sessions_per_timing = 3  # fresh sessions a multi-threaded timing keeps the fastest of
    load_every_s = 10.0

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
        allow_busy: bool = False,
        on_wait: Callable[[str, float], None] | None = None,
        spread_s: float = SPREAD_S,
    ):
        self.threads, self.warmup, self.warmup_s, self.spread_s = threads, warmup, warmup_s, spread_s
        self.sessions = 1 if threads == 1 else self.sessions_per_timing
        self.runs, self.min_runs, self.budget_s = runs, min_runs, budget_s
        self.max_spread, self.retries = max_spread, retries
        self.allow_busy = allow_busy or os.environ.get("TOOLCHAIN_ALLOW_BUSY") == "1"
        self.on_wait = on_wait
        self._load: HostLoad | None = None
        self._load_at = -math.inf
        self._probe_model = self._probe_file(self.probe) if threads > 1 and self.probe else None

    def time_models(self, models: Sequence[bytes]) -> list[Timing]:
        """Each model's fastest round: the models are timed in turn, round after round, until the rounds span
        `spread_s` (at most MAX_ROUNDS; time spent waiting for quiet not counted), so that a slow spell of a shared
        machine slows some rounds, not all."""
        rounds: list[tuple[HostLoad, list[Timing]]] = []
        timing_s = 0.0
        while not rounds or (timing_s < self.spread_s and len(rounds) < MAX_ROUNDS):
            load = self.quiet_enough()
            started = time.monotonic()
            rounds.append((load, [self.time_model(m) for m in models]))
            timing_s += time.monotonic() - started
        kept = [min(((load, t[i]) for load, t in rounds), key=lambda lt: lt[1].median_ms) for i in range(len(models))]
        return [replace(timing, load=load.as_record()) for load, timing in kept]

    def quiet_enough(self) -> HostLoad:
        """The machine's load, once it is quiet enough to time (waiting for that, or refusing)."""
        deadline = time.monotonic() + self.wait_s
        fresh = False
        while True:
            load = self._load_now(fresh)
            problem = load.problem(self.busy_cores, self.probe.min_speedup if self.probe else 0.0)
            if problem is None or self.allow_busy:
                return load
            left = deadline - time.monotonic()
            what, fix = problem
            if left <= 0:
                raise ToolchainError(
                    f"{what}: timings now would be slow and wrong; {fix}, or pass --allow-busy to measure anyway"
                )
            if self.on_wait:
                self.on_wait(what, left)
            time.sleep(min(1.0, left))
            fresh = True

    def _load_now(self, fresh: bool) -> HostLoad:
        """The other processes' load (sampled at most every `load_every_s` unless `fresh`) and, with several
        threads, the threads' speed-up on the probe now: a spell starts and ends within a second."""
        if fresh or self._load is None or time.monotonic() - self._load_at >= self.load_every_s:
            self._load, self._load_at = HostLoad.sample(), time.monotonic()
        if self._probe_model is None:
            return self._load
        one, many = (self._measure(self._probe_model, threads).median_ms for threads in (1, self.threads))
        return replace(self._load, threads_speedup=one / many)

    def time_model(self, model: bytes) -> Timing:
        return min((self._session_timing(model) for _ in range(self.sessions)), key=lambda t: t.median_ms)

    def _session_timing(self, model: bytes) -> Timing:
        best = self._measure(model)
        for _ in range(self.retries):
            if best.spread <= self.max_spread:
                break
            again = self._measure(model)
            best = again if again.spread < best.spread else best
        return best

    def _session(self, model: bytes, threads: int) -> Callable[[], object]:
        """Load `model` to run on `threads` threads with random inputs bound; return the zero-argument call to time."""
        raise NotImplementedError

    def _probe_file(self, probe: ThreadsProbe) -> bytes:
        """`probe`'s ops side by side in a model file this runtime runs."""
        raise NotImplementedError

    def _measure(self, model: bytes, threads: int | None = None) -> Timing:
        try:
            invoke = self._session(model, threads or self.threads)
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
    probe = LITERT_PROBE

    def __init__(self, threads: int = 1, precision: str = "fp32", **timing):
        super().__init__(threads, **timing)
        self.target = host_target("litert", threads, "xnnpack", precision)

    def _probe_file(self, probe: ThreadsProbe) -> bytes:
        return packed_model([probe.op] * probe.copies)

    def _session(self, model: bytes, threads: int) -> Callable[[], object]:
        from ai_edge_litert.interpreter import Interpreter

        with quiet_native():  # the XNNPACK delegate announces itself on stderr when it is applied
            interpreter = Interpreter(model_content=model, num_threads=threads)
            interpreter.allocate_tensors()
        rng = np.random.default_rng(0)
        for d in interpreter.get_input_details():
            interpreter.set_tensor(d["index"], rng.standard_normal(d["shape"]).astype(d["dtype"]))
        return interpreter.invoke


class OnnxRuntimeHostRunner(_HostRunner):
    """ONNX Runtime's CPU execution provider with its default graph optimisations, for users who deploy ONNX."""

    model_format = "onnx"
    probe = ONNXRUNTIME_PROBE
    # ONNX Runtime's 2-thread sessions differ more than LiteRT's: with 3 per timing, the unpruned
    # mobilenet_v2_cifar file's 10 timings spread 39% (LiteRT's 3%; BENCHMARKS.md, the 2-thread fidelity
    # sections). Timed 8 times at each count on a quiet 2-core VM by hand, it spread 42%, 15% and 4% with 1, 3 and
    # 6 sessions per timing; the fidelity section rerun with 6 is what will show it in BENCHMARKS.md
    sessions_per_timing = 6

    def __init__(self, threads: int = 1, **timing):
        super().__init__(threads, **timing)
        self.target = host_target("onnxruntime", threads, "cpu")

    def _probe_file(self, probe: ThreadsProbe) -> bytes:
        from .onnx_ops import packed_onnx  # onnx is loaded only where ONNX Runtime is timed

        return packed_onnx([probe.op] * probe.copies)

    def _session(self, model: bytes, threads: int) -> Callable[[], object]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feeds = {
            i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
            for i in session.get_inputs()
        }
        return lambda: session.run(None, feeds)

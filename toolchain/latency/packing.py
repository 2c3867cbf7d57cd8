"""Many op shapes per benchmark run: packs of independent single-op graphs, timed with the target's op profiler.

A phone pays for every benchmark_model run (a push, a process start, a model load, the warm-up: 2-3 s), which for
the ~3,000 op shapes of a 224-px ResNet-18 table is two hours. A runner with an op profiler (`PackingRunner`: the
phone runner) instead times up to MAX_OPS shapes of one op family side by side in one model (`packed_model`), and
the profile gives each its time.

Inside a pack an op runs after its neighbours instead of after itself, so its caches are colder. On this host
compute-bound convolutions take within a few percent of their single-op time there, while ops that stream a large
input (a max pool over 114x114x64) or convolutions whose weights outgrow the cache take longer (BENCHMARKS.md,
"Packed profiling"). So each family is probed before it is packed: its largest shape is also timed alone, and a
family whose packed time is off by more than PROBE_TOLERANCE, beyond the two measurements' own noise, in
PROBE_TRIES probes in a row is timed one op per run. So is everything after a pack whose profile does not list one
row per op (a build whose XNNPACK reports one delegate node).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import groupby
from typing import Protocol, TypeGuard

from .runners import Runner, Target, Timing
from .signature import OpSignature
from .tflite import packed_model, single_op_model

MAX_OPS = 64
MAX_BYTES = 48 * 2**20  # a pack's weights and activations: far below what a phone gives one process
PROBE_TOLERANCE = 0.10
PROBE_SLACK_MS = 0.002  # benchmark_model reports whole microseconds, and a run alone adds its invoke overhead
PROBE_TRIES = 2  # a probe on a busy target can disagree by chance, and giving a family up costs a run per shape
PACKS_PER_CALL = 4  # packs pushed and timed per runner call: each call's results are journaled before the next
SINGLES_PER_CALL = 8


class PackingRunner(Runner, Protocol):
    def time_op_packs(self, packs: Sequence[tuple[bytes, int]]) -> list[list[Timing] | None]:
        """Per (model file, number of ops) pack, each op's timing from one profiled run, in order; None for a pack
        whose profile does not list one row per op."""
        ...


def can_pack(runner: Runner) -> TypeGuard[PackingRunner]:
    return callable(getattr(runner, "time_op_packs", None))


def footprint(sig: OpSignature, target: Target) -> int:
    """Bytes one op adds to a pack: its model file (weights) and its input and output activations."""
    item = 1 if target.precision == "int8" else 4
    out_h, out_w = -(-sig.h // sig.stride), -(-sig.w // sig.stride)
    return len(single_op_model(sig, precision=target.precision)) + item * (
        sig.h * sig.w * sig.c_in + out_h * out_w * sig.c_out
    )


def plan_packs(sigs: Sequence[OpSignature], size: Callable[[OpSignature], int]) -> list[list[OpSignature]]:
    """`sigs` (of one family) in packs of at most MAX_OPS ops and MAX_BYTES bytes, largest first, so that the
    first pack holds the shape the probe times alone."""
    packs: list[list[OpSignature]] = []
    used = 0
    for sig in sorted(sigs, key=lambda s: (s.c_in * s.c_out, s), reverse=True):
        bytes_ = size(sig)
        if not packs or len(packs[-1]) >= MAX_OPS or used + bytes_ > MAX_BYTES:
            packs.append([])
            used = 0
        packs[-1].append(sig)
        used += bytes_
    return packs


def agrees(packed: Timing, alone: Timing) -> bool:
    """Whether an op's time inside a pack is its time alone, up to PROBE_TOLERANCE and what the two measurements'
    own spreads (p10 to p90) leave open."""
    noise = (packed.p90_ms - packed.p10_ms + alone.p90_ms - alone.p10_ms) / 2
    return abs(packed.median_ms - alone.median_ms) <= PROBE_TOLERANCE * alone.median_ms + PROBE_SLACK_MS + noise


class OpTimer:
    """Times op shapes on a runner: packed per family where the runner profiles ops and the probe agrees, else
    one single-op model per run. `runs` counts the benchmark runs asked for, `packed` the shapes timed in packs."""

    def __init__(self, runner: Runner, model_file: Callable[[OpSignature], bytes], pack: bool = True):
        self.runner, self.model_file = runner, model_file
        self.packing_runner = runner if pack and can_pack(runner) and runner.model_format == "tflite" else None
        self.pack = self.packing_runner is not None
        self.runs = self.packed = 0

    def __call__(self, sigs: Sequence[OpSignature]) -> Iterator[tuple[OpSignature, Timing]]:
        """(shape, timing) pairs as they are measured, so that each can be journaled before the next run."""
        by_family = groupby(sorted(sigs, key=lambda s: (s.family, s)), key=lambda s: s.family)
        for family in [list(group) for _, group in by_family] if self.pack else [list(sigs)]:
            yield from self.family(family) if self.pack else self.single(family)

    def single(self, sigs: Sequence[OpSignature]) -> Iterator[tuple[OpSignature, Timing]]:
        for start in range(0, len(sigs), SINGLES_PER_CALL):
            batch = sigs[start : start + SINGLES_PER_CALL]
            self.runs += len(batch)
            yield from zip(batch, self.runner.time_models([self.model_file(s) for s in batch]))

    def family(self, sigs: list[OpSignature]) -> Iterator[tuple[OpSignature, Timing]]:
        if len(sigs) == 1:
            yield from self.single(sigs)
            return
        target = self.runner.target
        packs = plan_packs(sigs, lambda s: footprint(s, target))
        probe = packs[0][0]
        for _ in range(PROBE_TRIES):
            first = self.time_packs(packs[:1])[0]
            (alone,) = self.runner.time_models([self.model_file(probe)])
            self.runs += 1
            agreed = first is not None and agrees(first[0], alone)
            if first is None or agreed:
                break
        if first is None:  # the profile does not tell ops apart, and will not for the next pack either
            self.pack = False
        if first is None or not agreed:
            yield probe, alone
            yield from self.single([s for s in sigs if s != probe])
            return
        yield from self.landed(packs[0], first)
        for start in range(1, len(packs), PACKS_PER_CALL):
            batch = packs[start : start + PACKS_PER_CALL]
            for pack, timings in zip(batch, self.time_packs(batch)):
                yield from self.landed(pack, timings) if timings else self.single(pack)

    def time_packs(self, packs: list[list[OpSignature]]) -> list[list[Timing] | None]:
        self.runs += len(packs)
        precision = self.runner.target.precision
        assert self.packing_runner is not None  # only families are packed, and only with such a runner
        return self.packing_runner.time_op_packs([(packed_model(p, precision=precision), len(p)) for p in packs])

    def landed(self, pack: list[OpSignature], timings: list[Timing]) -> Iterator[tuple[OpSignature, Timing]]:
        self.packed += len(pack)
        yield from zip(pack, timings)

"""The profiler: which op shapes a model's pruned variants can take, and measuring the ones a table lacks.

Every prunable group's kept count varies over a channel grid (multiples of `channel_step`, plus the full width);
each exported op is measured at every combination of the grids of the groups it reads (at most input x output
channels for a conv), and ops that pruning cannot change are measured once. Shapes already in the table, from
this model or any other, are never measured again.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..graph import ModelGraph
from ..lowering import GraphOp
from ..policy import graph_fingerprint, round_channels
from .onnx_ops import single_op_onnx
from .packing import OpTimer
from .runners import Runner, Target, best_of_each
from .signature import OpSignature
from .table import LatencyTable, ModelCalibration
from .tflite import single_op_model

CALIBRATION_RATIOS = (1.0, 0.25)  # whole-model variants measured per architecture: both ends of the search range
CALIBRATION_REPEATS = 5  # the fastest of this many interleaved measurements of each calibration variant


def single_op_file(sig: OpSignature, target: Target) -> bytes:
    """`sig` alone, as `target` runs it: its model format and precision."""
    if target.model_format == "onnx":
        return single_op_onnx(sig)
    return single_op_model(sig, precision=target.precision)


def channel_grid(channels: int, step: int = 8, max_points: int = 16) -> list[int]:
    """Kept-channel counts to measure for a group of `channels`: multiples of `step` and the full width. Wide
    layers get at most `max_points` evenly spread multiples; the predictor interpolates between them."""
    grid = sorted({c for c in range(step, channels + 1, step)} | {channels})
    if len(grid) > max_points:
        picks = {round(i * (len(grid) - 1) / (max_points - 1)) for i in range(max_points)}
        grid = [grid[i] for i in sorted(picks)]
    return grid


def op_shapes(op: GraphOp, channels: Sequence[int], grids: Sequence[list[int]]) -> set[OpSignature]:
    """All signatures `op` takes when each group it reads varies over its grid (the others at full width)."""
    groups = op.groups_read
    if len(groups) > 2:  # a concat of many groups: vary them together, by grid position
        steps = max(len(grids[g]) for g in groups)
        combos = [[grids[g][round(i * (len(grids[g]) - 1) / max(1, steps - 1))] for g in groups] for i in range(steps)]
    else:
        combos = [list(c) for c in itertools.product(*(grids[g] for g in groups))]
    shapes = set()
    for combo in combos:
        keep = list(channels)
        for g, k in zip(groups, combo):
            keep[g] = k
        shapes.add(op.signature(keep))
    return shapes


def shapes_to_profile(
    graph: ModelGraph, model_format: str = "tflite", channel_step: int = 8, max_points: int = 16
) -> list[OpSignature]:
    grids = [channel_grid(g.channels, channel_step, max_points) for g in graph.groups]
    shapes: set[OpSignature] = set()
    for op in graph.ops(model_format):
        shapes |= op_shapes(op, graph.channels, grids)
    return sorted(shapes)


@dataclass(frozen=True)
class ProfileResult:
    wanted: int
    measured: int
    calibrated: bool
    runs: int = 0  # benchmark runs for the op shapes (the calibration's whole models not counted)
    packed: int = 0  # shapes timed inside packs of many, by the target's op profiler

    @property
    def all_new(self) -> bool:
        """Every shape the model needs was measured by this call: a check of the table now would only time the
        target's noise (see `check`)."""
        return self.measured == self.wanted


def profile(
    graph: ModelGraph,
    runner: Runner,
    table: LatencyTable,
    build_variant: Callable[[Sequence[int]], bytes] | None = None,
    channel_step: int = 8,
    max_points: int = 16,
    on_progress: Callable[[int, int], None] | None = None,
    remeasure: bool = False,
    pack: bool = True,
) -> ProfileResult:
    """Measure every shape of `graph` the table lacks (with `remeasure`, every one it has too: the table went
    stale), journaling each entry as it lands. Runners with an op profiler time many shapes per run (`packing`)
    unless `pack` is False.

    `build_variant(keep)` returns the model pruned to `keep` channels per group as a model file; once per
    architecture (again with `remeasure`), the full model and a uniformly thinned one (CALIBRATION_RATIOS) are
    measured end to end to calibrate the sum of ops.
    """
    wanted = shapes_to_profile(graph, runner.model_format, channel_step, max_points)
    todo = wanted if remeasure else [s for s in wanted if s not in table]
    key = graph_fingerprint(graph)
    calibrate = build_variant is not None and (remeasure or key not in table.models)
    total = len(todo) + (len(CALIBRATION_RATIOS) if calibrate else 0)
    done = 0
    if on_progress:
        on_progress(0, total)
    timer = OpTimer(runner, lambda sig: single_op_file(sig, runner.target), pack)
    try:
        for sig, timing in timer(todo):
            table.add(sig, timing)
            done += 1
            if on_progress:
                on_progress(done, total)
        if calibrate:
            from .predictor import LatencyPredictor

            uncalibrated = LatencyPredictor(graph, table)
            keeps = [[round_channels(r, g.channels, channel_step) for g in graph.groups] for r in CALIBRATION_RATIOS]
            # interleaved, so that load which comes and goes cannot bend the line between the two ends
            timings = best_of_each(runner, [build_variant(keep) for keep in keeps], CALIBRATION_REPEATS)
            sums = tuple(sum(uncalibrated.op_latencies(keep)) for keep in keeps)
            table.add_model(key, ModelCalibration(sums, tuple(t.median_ms for t in timings)))
            done += len(keeps)
            if on_progress:
                on_progress(done, total)
    finally:
        table.save()
    return ProfileResult(len(wanted), len(todo), calibrate, timer.runs, timer.packed)

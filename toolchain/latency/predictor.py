"""`LatencyPredictor`: a model's latency for any pruning policy, from the table alone.

Each exported op is looked up by its signature. Channel counts between measured grid points are interpolated
(bilinearly over input x output channels for convs and fully-connected layers, linearly otherwise) inside the
op's family (same kind, spatial size, kernel, stride, padding, activation). The per-op sum then goes through the
model's calibration line (fitted by the profiler to whole-model variants measured end to end), which absorbs
what single-op runs miss: cache reuse between consecutive ops and per-invoke overhead. A model the table has
no calibration for (e.g. one priced from other models' imported phone logs) uses the line fitted to all the
target's calibration points.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import ops
from ..errors import ToolchainError
from ..graph import ModelGraph
from ..lowering import GraphOp
from ..policy import graph_fingerprint
from .signature import OpSignature
from .table import LatencyTable


@dataclass
class _Family:
    """Measured latencies of one op family on a (c_in x c_out) grid; `c_in` is None when c_in == c_out."""

    c_in: list[int] | None
    c_out: list[int]
    ms: np.ndarray  # (len(c_in), len(c_out)) or (len(c_out),)

    def at(self, c_in: int, c_out: int) -> float:
        if self.c_in is None:
            return _interp1(self.c_out, self.ms, c_out)
        i0, i1, ti = _bracket(self.c_in, c_in)
        row0 = _interp1(self.c_out, self.ms[i0], c_out)
        row1 = _interp1(self.c_out, self.ms[i1], c_out)
        return row0 + ti * (row1 - row0)


def _bracket(grid: list[int], x: float) -> tuple[int, int, float]:
    """Indices of the grid points around x and x's fraction between them (linear extrapolation at the ends)."""
    if len(grid) == 1:
        return 0, 0, 0.0
    j = min(max(bisect.bisect_left(grid, x), 1), len(grid) - 1)
    return j - 1, j, (x - grid[j - 1]) / (grid[j] - grid[j - 1])


def _interp1(grid: list[int], values: np.ndarray, x: float) -> float:
    i0, i1, t = _bracket(grid, x)
    return float(values[i0] + t * (values[i1] - values[i0]))


class LatencyPredictor:
    """Predicts `graph`'s latency in milliseconds for any kept-channel vector, from `table` alone."""

    def __init__(self, graph: ModelGraph, table: LatencyTable, correction: float = 1.0):
        """`correction` scales every prediction: a table checked against its target and found off by one factor."""
        self.graph = graph
        self.table = table
        self.correction = correction
        families: dict[OpSignature, _Family] = {}
        self._ops: list[tuple[GraphOp, _Family]] = []
        for op in graph.ops(table.target.model_format):
            family = op.signature(graph.channels).family
            if family not in families:
                families[family] = self._family(family, op)
            self._ops.append((op, families[family]))
        calibration = table.models.get(graph_fingerprint(graph)) or table.pooled_calibration()
        self.scale, self.offset = calibration.line() if calibration else (1.0, 0.0)
        self.calibrated = calibration is not None

    def _family(self, family: OpSignature, op: GraphOp) -> _Family:
        points = {(s.c_in, s.c_out): t.median_ms for s, t in self.table.entries.items() if s.family == family}
        if not points:
            raise ToolchainError(
                f"the latency table has no entry for {family.kind} ops like "
                f"'{family.key()}' (layer {op.module}): run `toolchain profile` for this model"
            )
        if ops.kind(family.kind).square:
            c_out = sorted(c for (_, c) in points)
            return _Family(None, c_out, np.array([points[(c, c)] if (c, c) in points else np.nan for c in c_out]))
        c_in = sorted({a for a, _ in points})
        c_out = sorted({b for _, b in points})
        grid = np.full((len(c_in), len(c_out)), np.nan)
        for (a, b), ms in points.items():
            grid[c_in.index(a), c_out.index(b)] = ms
        if np.isnan(grid).any():
            grid = _fill_gaps(grid)
        return _Family(c_in, c_out, grid)

    def op_latencies(self, keep: Sequence[int] | None = None) -> list[float]:
        """Each op's interpolated table latency (ms, before calibration) with `keep[g]` channels in group g."""
        keep = self.graph.channels if keep is None else keep
        out = []
        for op, family in self._ops:
            c_in = sum(r.resolve(keep) for r in op.inputs)
            c_out = sum(r.resolve(keep) for r in op.output)
            out.append(self.correction * max(0.0, family.at(c_in, c_out)))
        return out

    def group_latencies(self, keep: Sequence[int] | None = None) -> np.ndarray:
        """Per channel group, the summed latency of every op that reads or writes its channels."""
        out = np.zeros(len(self.graph.groups))
        for (op, _), ms in zip(self._ops, self.op_latencies(keep)):
            for g in op.groups_read:
                out[g] += ms
        return out

    def predict(self, keep: Sequence[int] | None = None) -> float:
        """Predicted end-to-end latency (ms) with `keep[g]` output channels in group g (full width by default)."""
        return self.scale * sum(self.op_latencies(keep)) + self.correction * self.offset


def _fill_gaps(grid: np.ndarray) -> np.ndarray:
    """Fill grid cells that were never measured (the grids of two models sharing a family need not align) by
    interpolating along output channels, then input channels."""
    filled = grid.copy()
    for axis_grid in (filled, filled.T):
        for row in axis_grid:
            known = ~np.isnan(row)
            if known.sum() >= 1 and not known.all():
                idx = np.arange(len(row))
                row[~known] = np.interp(idx[~known], idx[known], row[known])
    return filled

"""Checking a latency table against its target before trusting it.

A table can go stale on its own target (a phone's thermal state, an Android or runtime update) or be copied from
another machine whose fingerprint collides. Whenever the target is at hand, a few of the table's own entries are
timed again next to the unpruned model end to end, and compared with the table:

  * the model and all entries but one within ±10%: the table is trusted;
  * off together (the model and all entries but one within ±10% of one factor): one factor explains it, and the
    predictions of this run are scaled by it (the run says so; the table file is left as measured);
  * off unevenly: the table no longer describes this target, and what the run needs is measured again.

A table whose every entry for the model was measured by the same run, minutes before, is not checked: drift is
what a check looks for, and a check then would only time the target's noise (on a shared VM, spells of 20-30%
that last minutes) and measure everything again for nothing.

One stray entry is allowed: a single-op model timed in a fresh process can land 10-15% away from its table entry
and stay there (where its buffers fall in memory), while drift moves many entries, or the whole model.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import ToolchainError
from ..files import write_atomic
from ..graph import ModelGraph
from .predictor import LatencyPredictor
from .profiler import profile, single_op_file
from .runners import Runner, best_of
from .table import LatencyTable

TOLERANCE = 0.10
RESOLUTION_MS = 0.002  # phones report whole microseconds: a difference this small is not drift
STRAY_ENTRIES = 1  # entries allowed beyond the tolerance when the rest agree (see the module docstring)
SAMPLE = 8  # entries timed again: a few seconds on a phone, well under a second each on the host

Action = Literal["trusted", "rescaled", "remeasured", "fresh"]


@dataclass(frozen=True)
class TableCheck:
    entries: int  # of the table's entries timed again
    entry_ratios: tuple[float, ...]  # measured now / table, per entry
    model_ratio: float | None  # the unpruned model measured end to end / predicted (None: not timed)
    action: Action
    factor: float  # applied to this run's predictions (1.0 unless rescaled)
    seconds: float

    @classmethod
    def fresh(cls) -> TableCheck:
        return cls(0, (), None, "fresh", 1.0, 0.0)

    def describe(self) -> str:
        if self.action == "fresh":
            return "latency table measured by this run for this model: not checked again"
        ratios = [*self.entry_ratios, self.model_ratio]
        seen = (
            f"{self.entries} table entries and the unpruned model timed again: {min(ratios):.2f}x to "
            f"{max(ratios):.2f}x the table ({self.seconds:.1f} s)"
        )
        return {
            "trusted": f"latency table checked: {seen}, within ±{TOLERANCE:.0%}",
            "rescaled": f"latency table off by one factor: {seen}; this run's predictions are scaled by "
            f"{self.factor:.3f} (profile again to rewrite the table)",
            "remeasured": f"latency table off unevenly: {seen}; measuring this model's shapes again",
        }[self.action]

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> TableCheck:
        try:
            saved = json.loads(path.read_text())
            return cls(**{**saved, "entry_ratios": tuple(saved["entry_ratios"])})
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as e:
            raise ToolchainError(
                f"{path} is not a latency table check ({type(e).__name__}): delete it to check the table again"
            ) from None


def check_table(
    graph: ModelGraph, runner: Runner, table: LatencyTable, unpruned_model: bytes, sample: int = SAMPLE
) -> TableCheck:
    """Time `sample` of the table's entries for `graph` (spread over their latencies) and `unpruned_model`, and
    decide what the table is still good for (see the module docstring)."""
    started = time.perf_counter()
    predictor = LatencyPredictor(graph, table)
    # entries long enough to time well (phones report whole microseconds), spread over their latencies
    entries = sorted(
        {
            s
            for s in graph.signatures(model_format=runner.model_format)
            if s in table and table.entries[s].median_ms >= 10 * RESOLUTION_MS
        },
        key=lambda s: table.entries[s].median_ms,
    )
    picks = [entries[round(i * (len(entries) - 1) / max(1, sample - 1))] for i in range(min(sample, len(entries)))]
    picks = list(dict.fromkeys(picks))
    timings = runner.time_models([single_op_file(s, runner.target) for s in picks]) if picks else []
    pairs = [(t.median_ms, table.entries[s].median_ms) for s, t in zip(picks, timings)]
    pairs.append((best_of(runner, unpruned_model).median_ms, predictor.predict()))
    measured, expected = np.array(pairs).T
    ratios = measured / expected
    action, factor = verdict(measured, expected)
    return TableCheck(
        len(picks),
        tuple(float(r) for r in ratios[:-1]),
        float(ratios[-1]),
        action,
        factor,
        time.perf_counter() - started,
    )


def likely_cause(predicted_ms: float, measured_ms: float) -> str:
    """Why a final measurement and its prediction disagree by more than the tolerance, in a sentence."""
    ratio = measured_ms / predicted_ms
    if ratio > 1:
        return (
            f"the target ran {ratio:.2f}x slower than predicted: it may have been busy or hot while the file was "
            "timed, or the table is stale; check with `toolchain profile --validate`"
        )
    return (
        f"the target ran {1 / ratio:.2f}x faster than predicted: the table may come from a slower state of the "
        "target (a hot phone, a busy host); profile it again"
    )


def checked_predictor(
    graph: ModelGraph,
    runner: Runner,
    table: LatencyTable,
    build_variant,
    channel_step: int = 8,
    check: bool = True,
    on_progress=None,
    on_message=lambda message: None,
    previous: TableCheck | None = None,
) -> tuple[LatencyPredictor, TableCheck | None]:
    """Profile what `table` lacks for `graph`, check the table against the target (unless `check` is False), act
    on what the check found, and return the predictor to use with the check's result. A `previous` check (of a
    search being resumed, or of the run's first search) is kept instead of checking again: the run goes on at the
    prices it started with, not at those of a check that the target's timing noise can tip the other way. Nor is a
    table checked whose entries for `graph` were all measured just now (see the module docstring)."""
    profiled = profile(graph, runner, table, build_variant, channel_step, on_progress=on_progress)
    if previous is not None:
        on_message(f"{previous.describe()} (kept from when this run started)")
        return LatencyPredictor(graph, table, previous.factor), previous
    if not check:
        return LatencyPredictor(graph, table), None
    result = (
        TableCheck.fresh() if profiled.all_new else check_table(graph, runner, table, build_variant(graph.channels))
    )
    on_message(result.describe())
    if result.action == "remeasured":
        profile(graph, runner, table, build_variant, channel_step, on_progress=on_progress, remeasure=True)
    return LatencyPredictor(graph, table, result.factor), result


def verdict(measured: np.ndarray, expected: np.ndarray) -> tuple[Action, float]:
    """What a table is good for, from entries timed again and the unpruned model last (measured and table ms):
    the action and the factor this run's predictions are scaled by."""
    ratios = measured / expected

    def agree(reference: np.ndarray) -> bool:
        close = np.abs(measured - reference * expected) <= np.maximum(TOLERANCE * reference * expected, RESOLUTION_MS)
        return bool(close[-1]) and int((~close[:-1]).sum()) <= STRAY_ENTRIES

    if agree(np.float64(1.0)):
        return "trusted", 1.0
    if agree(np.median(ratios)):
        return "rescaled", float(ratios[-1])
    return "remeasured", 1.0

"""What `compress` hands back: one `SearchOutcome` per search, one `StageResult` per stage, and the
`CompressResult` that the report and the CLI read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .export import ExportResult
from .latency.check import TableCheck
from .latency.runners import Timing
from .layout import RunLayout
from .policy import PruningPolicy
from .search.env import Episode


@dataclass(frozen=True)
class SearchOutcome:
    layout: RunLayout  # where the search wrote its log, policy and checkpoint
    budget_ms: float
    start_ms: float  # predicted latency of the model the search started from
    start_accuracy: float  # its top-1 on the reward images
    best: Episode  # the chosen policy's episode; its accuracy is top-1 on the whole val split
    policy: PruningPolicy  # relative to the unpruned architecture, including any earlier stage's pruning
    baselines: dict[str, Episode]  # rule-based policies under the same budget, scored like the search's episodes
    table_check: TableCheck | None = None  # the latency table checked against the target (None: not checked)
    chosen_from: str = ""  # the strategy, or the rule, whose policy won on the whole val split


@dataclass(frozen=True)
class StageResult:
    search: SearchOutcome
    top1_pruned: float  # test top-1 before fine-tuning
    top1_finetuned: float  # after fine-tuning (the same model when there is none)
    checkpoint: Path  # the stage's final checkpoint


@dataclass(frozen=True)
class CompressResult:
    layout: RunLayout
    model: str
    target: str  # Target.describe() of where it was measured
    budget_ms: float
    unpruned_predicted_ms: float
    unpruned_measured: Timing | None  # None: the target was not measured (--no-measure)
    unpruned_top1: float
    unpruned_size_bytes: int
    stages: list[StageResult]
    exported: ExportResult
    measured: Timing | None
    attempts: int  # searches run (more than one with --enforce-measured)
    test_images: int

    @property
    def final(self) -> StageResult:
        return self.stages[-1]

    @property
    def within_budget(self) -> bool:
        """Measured within budget; predicted, when the target was not measured."""
        return self.latency_ms <= self.budget_ms

    @property
    def latency_ms(self) -> float:
        """The compressed model's latency: measured on the target, or predicted when it was not measured."""
        return self.measured.median_ms if self.measured is not None else self.final.search.best.latency_ms

    @property
    def speedup(self) -> float:
        """The unpruned model's latency over the compressed model's: timed in turn on the target, or predicted."""
        if self.measured is None or self.unpruned_measured is None:
            return self.unpruned_predicted_ms / self.final.search.best.latency_ms
        return self.unpruned_measured.median_ms / self.measured.median_ms

    def summary(self) -> dict[str, Any]:
        """The figures of the run as one flat JSON-able dict (what `compress --json` prints)."""
        final, best, exported = self.final, self.final.search.best, self.exported
        return {
            "out": str(self.layout.root),
            "report": str(self.layout.report),
            "model_file": exported.path,
            "sidecar": exported.sidecar,
            "checkpoint": str(final.checkpoint),
            "policy": str(final.search.layout.best_policy),
            "budget_ms": self.budget_ms,
            "unpruned_predicted_ms": self.unpruned_predicted_ms,
            "predicted_ms": best.latency_ms,
            "measured_ms": self.measured.median_ms if self.measured else None,
            "unpruned_measured_ms": self.unpruned_measured.median_ms if self.unpruned_measured else None,
            "within_budget": self.within_budget,
            "speedup": self.speedup,
            "top1_val": best.accuracy,
            "top1_test_unpruned": self.unpruned_top1,
            "top1_test_pruned": final.top1_pruned,
            "top1_test_finetuned": final.top1_finetuned,
            "top1_test_exported": exported.parity.top1_exported,
            "size_bytes": exported.size_bytes,
            "keep": list(best.keep),
            "stages": len(self.stages),
            "attempts": self.attempts,
        }

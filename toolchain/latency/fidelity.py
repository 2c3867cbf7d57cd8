"""How well the predictor matches reality: random pruned variants, converted whole and measured end to end.

Each variant is timed side by side with the unpruned model, so its error can be read two ways: as it stands
(predicted against measured milliseconds), and as a share of the unpruned model (the variant's predicted share of
the unpruned prediction against its measured share of the unpruned model timed alongside it). A shared machine
runs 20-40% slower for minutes at a time; that moves both timings of a pair together and leaves the share where
it was, so the share is what separates a predictor gone wrong from a machine that changed speed since the table
was measured. `unpruned_ratio` reports that change; `check_table` is what acts on it before a search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files import atomic_path
from ..graph import ModelGraph
from ..policy import round_channels
from .predictor import LatencyPredictor
from .runners import Runner, best_of_each


@dataclass(frozen=True)
class Variant:
    kind: str  # "uniform" or "random"
    keep: tuple[int, ...]
    predicted_ms: float
    measured_ms: float
    unpruned_ms: float  # the unpruned model, measured alongside this variant

    @property
    def error(self) -> float:
        return (self.predicted_ms - self.measured_ms) / self.measured_ms

    def share_error(self, unpruned_predicted_ms: float) -> float:
        """The error of the predicted share of the unpruned model, against the share measured side by side."""
        return (self.predicted_ms / unpruned_predicted_ms) / (self.measured_ms / self.unpruned_ms) - 1


@dataclass
class FidelityReport:
    unpruned_predicted_ms: float
    variants: list[Variant] = field(default_factory=list)

    def _errors(self, of_share: bool) -> np.ndarray:
        return np.abs([v.share_error(self.unpruned_predicted_ms) if of_share else v.error for v in self.variants])

    @property
    def mape(self) -> float:
        return float(np.mean(self._errors(of_share=False)))

    @property
    def share_mape(self) -> float:
        return float(np.mean(self._errors(of_share=True)))

    @property
    def unpruned_ratio(self) -> float:
        """How fast the target ran while the variants were timed: the unpruned model measured / predicted."""
        return float(np.median([v.unpruned_ms for v in self.variants]) / self.unpruned_predicted_ms)

    def within(self, tolerance: float, of_share: bool = False) -> float:
        return float(np.mean(self._errors(of_share) <= tolerance))

    def summary(self) -> dict:
        return {
            "samples": len(self.variants),
            "mape": self.mape,
            "within_5pct": self.within(0.05),
            "within_10pct": self.within(0.10),
            "max_abs_error": float(self._errors(of_share=False).max()),
            "share_mape": self.share_mape,
            "share_within_10pct": self.within(0.10, of_share=True),
            "unpruned_ratio": self.unpruned_ratio,
        }


def random_keeps(
    graph: ModelGraph, samples: int, seed: int = 0, low: float = 0.2, high: float = 1.0, multiple: int = 8
) -> list[tuple[str, list[int]]]:
    """Half uniform keep ratios, half independent per-group ratios, all in [low, high]."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(samples):
        if i % 2 == 0:
            r = rng.uniform(low, high)
            out.append(("uniform", [round_channels(r, g.channels, multiple) for g in graph.groups]))
        else:
            out.append(("random", [round_channels(rng.uniform(low, high), g.channels, multiple) for g in graph.groups]))
    return out


def measure_fidelity(
    graph: ModelGraph,
    predictor: LatencyPredictor,
    runner: Runner,
    build: Callable[[Sequence[int]], bytes],
    samples: int,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> FidelityReport:
    """`build(keep)` returns the pruned variant as a model file the runner can time."""
    unpruned = build(graph.channels)
    report = FidelityReport(predictor.predict())
    for i, (kind, keep) in enumerate(random_keeps(graph, samples, seed)):
        measured, alongside = best_of_each(runner, [build(keep), unpruned])
        report.variants.append(
            Variant(kind, tuple(keep), predictor.predict(keep), measured.median_ms, alongside.median_ms)
        )
        if on_progress:
            on_progress(i + 1, samples)
    return report


def plot_fidelity(report: FidelityReport, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for kind, marker in (("uniform", "o"), ("random", "x")):
        vs = [v for v in report.variants if v.kind == kind]
        ax.scatter(
            [v.measured_ms for v in vs], [v.predicted_ms for v in vs], marker=marker, label=f"{kind} keep ratios"
        )
    lo = min(min(v.measured_ms, v.predicted_ms) for v in report.variants) * 0.9
    hi = max(max(v.measured_ms, v.predicted_ms) for v in report.variants) * 1.1
    xs = np.linspace(lo, hi, 2)
    ax.plot(xs, xs, "k-", lw=1, label="predicted = measured")
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="gray", alpha=0.2, label="±10%")
    s = report.summary()
    ax.set(
        xlabel="measured latency (ms)",
        ylabel="predicted latency (ms)",
        xlim=(lo, hi),
        ylim=(lo, hi),
        title=f"{title}\nMAPE {100 * s['mape']:.1f}%, {100 * s['within_10pct']:.0f}% within ±10%",
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip("."))
    plt.close(fig)

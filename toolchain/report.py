"""The report `compress` leaves in its output folder: `report.md` with a summary table, and three plots.

- `policy.png`: kept fraction of each channel group, like the density plots of the AMC paper;
- `search.png`: reward and accuracy per episode of the (last) search, with the best so far;
- `tradeoff.png`: accuracy vs predicted latency of the unpruned model, every searched policy, the rule-based
  baselines and the chosen one, all scored the same way (val top-1 with reconstruction, before fine-tuning).
"""

from __future__ import annotations

from pathlib import Path

from .files import atomic_path
from .latency.check import TOLERANCE, likely_cause
from .results import CompressResult
from .search.run import read_log


def write_report(result: CompressResult) -> Path:
    layout = result.layout
    episodes = read_log(result.final.search.layout.root)
    _plot_policy(result, layout.plot("policy"))
    _plot_search(episodes, layout.plot("search"))
    _plot_tradeoff(result, episodes, layout.plot("tradeoff"))
    with atomic_path(layout.report) as tmp:
        tmp.write_text(render_markdown(result))
    return layout.report


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def render_markdown(r: CompressResult) -> str:
    final = r.final
    search = final.search
    exported = r.exported
    speedup = r.speedup
    lines = [
        f"# Compression report: {r.model} on {r.target}",
        "",
        f"Budget **{r.budget_ms:.3f} ms** ({r.budget_ms / r.unpruned_predicted_ms:.0%} of the unpruned model's "
        f"predicted {r.unpruned_predicted_ms:.3f} ms). Result: `{Path(exported.path).name}` ({exported.precision}), "
        f"{'measured' if r.measured else 'predicted'} **{r.latency_ms:.3f} ms**, **{speedup:.2f}x** faster than the "
        f"unpruned model, test top-1 **{_pct(exported.parity.top1_exported)}**.",
        "",
    ]
    if r.measured is None:
        lines += [
            f"**The file was not measured** (`--no-measure`): every latency here is predicted from the table of "
            f"{r.target}, which was not at hand. Time the file there with `toolchain bench` before shipping it.",
            "",
        ]
    check = search.table_check
    if check is not None:
        lines += [f"Before the search, {check.describe()}.", ""]
    if r.measured is not None and abs(r.measured.median_ms / search.best.latency_ms - 1) > TOLERANCE:
        lines += [
            f'<p style="color:red"><b>Predicted {search.best.latency_ms:.3f} ms and measured '
            f"{r.measured.median_ms:.3f} ms disagree by more than {TOLERANCE:.0%}</b>: "
            f"{likely_cause(search.best.latency_ms, r.measured.median_ms)}.</p>",
            "",
        ]
    if r.measured is not None and not r.within_budget:
        lines += [
            f'<p style="color:red"><b>The measured latency {r.measured.median_ms:.3f} ms exceeds the budget '
            f"{r.budget_ms:.3f} ms</b> (predicted {search.best.latency_ms:.3f} ms). Rerun with "
            "<code>--enforce-measured</code>, "
            "which tightens the budget by the measured/predicted ratio and searches again.</p>",
            "",
        ]
    if r.attempts > 1:
        lines += [
            f"Searched {r.attempts} times (`--enforce-measured`): the first result measured over the budget, so "
            f"the last search aimed at a predicted {search.budget_ms:.3f} ms; it is the one reported.",
            "",
        ]
    lines += [
        "| | unpruned | compressed |",
        "|---|---|---|",
        f"| test top-1 ({r.test_images} images) | {_pct(r.unpruned_top1)} | {_pct(final.top1_pruned)} pruned, "
        f"{_pct(final.top1_finetuned)} fine-tuned, {_pct(exported.parity.top1_exported)} exported |",
        f"| predicted latency | {r.unpruned_predicted_ms:.3f} ms | {search.best.latency_ms:.3f} ms |",
        f"| measured latency (median, p10-p90) | {_timing(r.unpruned_measured)} | {_timing(r.measured)} |",
        f"| budget | | {r.budget_ms:.3f} ms ({'met' if r.within_budget else 'EXCEEDED'}) |",
        f"| speed-up ({'measured' if r.measured else 'predicted'}) | 1.00x | {speedup:.2f}x |",
        f"| file size | {r.unpruned_size_bytes / 1e6:.2f} MB ({exported.precision}) | {exported.size_bytes / 1e6:.2f} "
        f"MB ({exported.precision}) |",
        "",
        f"Measured and predicted latency: {r.target}. Export parity against PyTorch on {exported.parity.images} test "
        f"images: top-1 agreement {_pct(exported.parity.top1_agreement)}, max |logit difference| "
        f"{exported.parity.max_abs_diff:.2g}.",
        "",
    ]
    if len(r.stages) > 1:
        lines += [
            "## Stages",
            "",
            "| stage | budget | predicted | val top-1 (search) | test top-1 pruned | fine-tuned |",
            "|---|---|---|---|---|---|",
        ]
        for i, stage in enumerate(r.stages):
            s = stage.search
            lines.append(
                f"| {i + 1} | {s.budget_ms:.3f} ms | {s.best.latency_ms:.3f} ms | {_pct(s.best.accuracy)} | "
                f"{_pct(stage.top1_pruned)} | {_pct(stage.top1_finetuned)} |"
            )
        lines.append("")
    lines += [
        "## Search (last stage)",
        "",
        "Val top-1 with least-squares reconstruction and no fine-tuning, the reward the search optimises; baselines "
        "are scored the same way under the same budget.",
        "",
        "| policy | predicted latency | val top-1 |",
        "|---|---|---|",
        f"| {_start_label(r)} | {search.start_ms:.3f} ms | {_pct(search.start_accuracy)} |",
        f"| chosen (re-scored on all of val) | {search.best.latency_ms:.3f} ms | {_pct(search.best.accuracy)} |",
        *(f"| {name} | {e.latency_ms:.3f} ms | {_pct(e.accuracy)} |" for name, e in search.baselines.items()),
        "",
        "![kept channels per group](policy.png)",
        "",
        "![search progress](search.png)",
        "",
        "![accuracy vs latency](tradeoff.png)",
        "",
        "## Files",
        "",
        f"- `{Path(exported.path).name}`, `{Path(exported.sidecar).name}` (input layout, normalisation, output), "
        f"`{Path(exported.labels).name}`: what an app needs",
        f"- `{final.checkpoint.relative_to(r.layout.root)}`: the PyTorch checkpoint; "
        f"`{search.layout.best_policy.name}` and "
        f"`{search.layout.search_log.name}` "
        + ("in this folder" if search.layout == r.layout else f"in `{search.layout.root.relative_to(r.layout.root)}/`"),
        "",
    ]
    return "\n".join(lines)


def _timing(t) -> str:
    return f"{t.median_ms:.3f} ms ({t.p10_ms:.3f}-{t.p90_ms:.3f})" if t is not None else "not measured"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_policy(r: CompressResult, path: Path) -> None:
    plt = _pyplot()
    policy = r.final.search.policy
    n = len(policy.keep)
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * n + 2), 3.6))
    xs = range(n)
    ax.bar(xs, [1.0] * n, color="#dddddd", label="unpruned")
    ax.bar(xs, [k / c for k, c in zip(policy.keep, policy.channels)], color="#1f77b4", label="kept")
    for x, (k, c) in enumerate(zip(policy.keep, policy.channels)):
        ax.text(x, 1.01, f"{k}/{c}", rotation=90, ha="center", va="bottom", fontsize=6)
    ax.set(
        xlabel="channel group (input to output)",
        ylabel="kept fraction of channels",
        ylim=(0, 1.25),
        title=f"{policy.arch}: channels kept per group",
    )
    ax.set_xticks(list(xs), [lead for lead in policy.leads], rotation=90, fontsize=6)
    ax.legend(loc="lower left", fontsize=8)
    _save(fig, path, plt)


def _plot_search(rows: list[dict], path: Path) -> None:
    plt = _pyplot()
    episodes = [int(row["episode"]) for row in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for ax, key, label in ((top, "reward", "reward"), (bottom, "accuracy", "val top-1 (reward images)")):
        values = [float(row[key]) for row in rows]
        best = [max(values[: i + 1]) for i in range(len(values))]
        ax.plot(episodes, values, ".", ms=3, alpha=0.6, label="episode")
        ax.plot(episodes, best, "-", color="C3", label="best so far")
        ax.set_ylabel(label)
        ax.legend(loc="lower right", fontsize=8)
    bottom.set_xlabel("episode")
    top.set_title("search progress")
    _save(fig, path, plt)


def _plot_tradeoff(r: CompressResult, rows: list[dict], path: Path) -> None:
    plt = _pyplot()
    search = r.final.search
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(
        [float(row["latency_ms"]) for row in rows],
        [100 * float(row["accuracy"]) for row in rows],
        s=6,
        color="#bbbbbb",
        label="searched policies",
    )
    ax.scatter([search.start_ms], [100 * search.start_accuracy], marker="s", color="k", label=_start_label(r))
    for (name, e), marker in zip(search.baselines.items(), "^v<>"):
        ax.scatter([e.latency_ms], [100 * e.accuracy], marker=marker, s=50, label=name)
    ax.scatter([search.best.latency_ms], [100 * search.best.accuracy], marker="*", s=160, color="C3", label="chosen")
    ax.axvline(search.budget_ms, color="C3", ls="--", lw=1, label="budget")
    ax.set(xlabel="predicted latency (ms)", ylabel="val top-1 before fine-tuning (%)", title="accuracy vs latency")
    ax.legend(fontsize=8)
    _save(fig, path, plt)


def _start_label(r: CompressResult) -> str:
    """What the last search started from: with --stages, the previous stage's fine-tuned model."""
    return "unpruned" if len(r.stages) == 1 else "start of the last stage"


def _save(fig, path: Path, plt) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip("."))
    plt.close(fig)

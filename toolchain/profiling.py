"""`profile` and `predict` as the commands run them: a model's latency table on a target (several phones in
parallel, one table each), an optional fidelity check against whole pruned variants, and predictions read from a
table without the device."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ToolchainError, require
from .export import latency_file
from .graph import analyze
from .latency.check import check_table, checked_predictor
from .latency.fidelity import measure_fidelity, plot_fidelity
from .latency.predictor import LatencyPredictor
from .latency.profiler import profile
from .latency.runners import Target
from .latency.table import LatencyTable, default_table_path, file_safe
from .latency.targets import TargetConfig, open_runner
from .models import ModelSource, load
from .policy import load_policy
from .surgery import pruned_copy

Progress = Callable[[int, int], None]
PLOT_FORMATS = (".png", ".pdf", ".svg")


@dataclass(frozen=True)
class Validation:
    """`profile --validate`: random pruned variants measured whole against the table's predictions."""

    samples: int = 20
    seed: int = 0
    plot: Path | None = None  # default: fidelity-<model>.png beside the table

    def __post_init__(self):
        require(self.samples >= 1, f"--samples {self.samples} must be at least 1")
        require(
            self.plot is None or self.plot.suffix in PLOT_FORMATS,
            f"--plot {self.plot} must end in {', '.join(PLOT_FORMATS)}: the suffix picks the image format",
        )


@dataclass(frozen=True)
class ProfileConfig:
    channel_step: int = 8  # kept-channel grid spacing of the pruned variants whose op shapes are measured
    validation: Validation | None = None
    trust_table: bool = False  # skip checking the entries a table already has against the target

    def __post_init__(self):
        require(self.channel_step >= 1, f"--channel-step {self.channel_step} must be at least 1")


@dataclass(frozen=True)
class ProfileReport:
    table: Path
    serial: str | None
    shapes: int  # op shapes the model's pruned variants take
    measured: int  # of those, new to the table
    entries: int
    target: Target
    fidelity: dict[str, Any] | None = None
    table_check: str | None = None  # what checking the table's existing entries found, when it had some
    runs: int = 0  # benchmark runs the new shapes took (a phone: process starts)
    packed: int = 0  # new shapes timed many per run, by the target's op profiler


def profile_model(
    source: ModelSource,
    target: TargetConfig,
    config: ProfileConfig = ProfileConfig(),
    progress: Callable[[str], Progress] = lambda label: lambda done, total: None,
    on_message: Callable[[str], None] = lambda message: None,
) -> list[ProfileReport]:
    """Measure what the target's table lacks for `source`'s pruned variants; with several phones, each in its own
    thread and table (same-model phones still differ: binning, cooling). `progress(label)` makes a progress
    callback per target."""
    channel_step, validation = config.channel_step, config.validation
    serials = tuple(dict.fromkeys(target.serials))
    require(not (len(serials) > 1 and validation), "--validate measures one phone: pass a single --serial")
    loaded = load(source)
    graph = analyze(loaded.model, loaded.spec.input_size)
    on_message(
        f"profiling {source.ref} ({len(graph.groups)} channel groups) on {target.device}"
        + (f", {len(serials)} phones in parallel" if len(serials) > 1 else "")
    )

    def build(model_format: str):
        return lambda keep: latency_file(
            pruned_copy(loaded.model, graph, keep), loaded.spec.input_size, model_format, target.precision
        )

    def one(serial: str | None) -> ProfileReport:
        runner = open_runner(replace(target, serials=(serial,)) if serial else target)
        path = target.table_for(runner)
        if serial and len(serials) > 1:
            path = path.with_name(f"{path.stem}-{file_safe(serial)}{path.suffix}")
        table = LatencyTable.open(path, runner.target)
        progress_of = progress(f"profile {serial or runner.target.device}")
        result = profile(graph, runner, table, build(runner.model_format), channel_step, on_progress=progress_of)
        checked = None
        if not result.all_new and not config.trust_table:  # entries measured before: do they still hold here?
            check = check_table(graph, runner, table, build(runner.model_format)(graph.channels))
            checked = check.describe()
            on_message(checked)
            if check.action != "trusted":  # a profile rewrites the table, even when one factor explains the drift
                result = profile(
                    graph,
                    runner,
                    table,
                    build(runner.model_format),
                    channel_step,
                    on_progress=progress_of,
                    remeasure=True,
                )
        fidelity = None
        if validation:
            predictor = LatencyPredictor(graph, LatencyTable.open(path, runner.target))
            report = measure_fidelity(
                graph,
                predictor,
                runner,
                build(runner.model_format),
                validation.samples,
                validation.seed,
                progress("validate"),
            )
            plot = validation.plot or path.with_name(f"fidelity-{source.name}.png")
            plot_fidelity(report, f"{source.ref} on {runner.target.device}", plot)
            fidelity = {**report.summary(), "plot": str(plot)}
        return ProfileReport(
            path,
            serial,
            result.wanted,
            result.measured,
            len(table),
            runner.target,
            fidelity,
            checked,
            result.runs,
            result.packed,
        )

    if len(serials) <= 1:
        return [one(serials[0] if serials else None)]
    with ThreadPoolExecutor(len(serials)) as pool:  # phones measure in parallel; each writes its own table
        futures = [pool.submit(one, s) for s in serials]
    failed = [f"{s}: {f.exception()}" for s, f in zip(serials, futures) if f.exception()]
    if failed:
        raise ToolchainError(
            f"profiling failed on {'; '.join(failed)} (the other phones' tables are complete; rerun to resume)"
        )
    return [f.result() for f in futures]


@dataclass(frozen=True)
class Prediction:
    latency_ms: float
    table: Path
    target: Target
    calibrated: bool  # the table has whole-model measurements of this architecture (else the target's pooled line)


def predict_latency(
    source: ModelSource,
    target: TargetConfig,
    policy: str | None = None,
    trust_table: bool = False,
    on_message: Callable[[str], None] = lambda message: None,
) -> Prediction:
    """The predicted latency of `source` (pruned by `policy`, if given). With `target.table` the file names its own
    target, which need not be at hand (a phone not attached); otherwise the target's table is first checked on the
    target (and completed, rescaled or measured again as the check finds)."""
    loaded = load(source)
    graph = analyze(loaded.model, loaded.spec.input_size)
    keep = list(load_policy(policy, graph, loaded.spec.arch).keep) if policy else None
    if target.table is not None:
        table = LatencyTable.open(target.table, None)
        predictor = LatencyPredictor(graph, table)
    else:
        runner = open_runner(target)
        path = default_table_path(runner.target)
        if not path.exists():
            raise ToolchainError(
                f"no latency table at {path}: run `toolchain profile --device {target.device} "
                f"--model {source.ref}` first"
            )
        table = LatencyTable.open(path, runner.target)
        size, fmt = loaded.spec.input_size, runner.model_format
        predictor, _ = checked_predictor(
            graph,
            runner,
            table,
            lambda k: latency_file(pruned_copy(loaded.model, graph, k), size, fmt, target.precision),
            check=not trust_table,
            on_message=on_message,
        )
    return Prediction(predictor.predict(keep), Path(table.path or ""), table.target, predictor.calibrated)

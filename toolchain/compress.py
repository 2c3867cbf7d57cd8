"""`compress`: the whole AMC pipeline for one model and one latency budget, as typed functions.

`search_and_prune`: model -> channel groups -> latency table (profiled where it lacks shapes) -> search -> best
policy -> pruned checkpoint. `compress` runs it once per stage (AMC's iterative schedule prunes in steps and
fine-tunes after each), fine-tunes, exports the result for the target, measures it there, and writes a report.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .data import FEATURES_AT_32PX, ImageSet, images_per_pass, load_split, normalize
from .errors import ToolchainError, require
from .evaluate import evaluate
from .export import PRECISIONS, ExportResult, calibration_inputs, check_format, export, latency_file, to_model_file
from .files import atomic_path, check_resumable, locked, write_atomic
from .graph import ModelGraph, analyze
from .latency.check import TableCheck, checked_predictor
from .latency.predictor import LatencyPredictor
from .latency.runners import Runner, Target, Timing, best_of_each
from .latency.table import LatencyTable
from .latency.targets import TargetConfig, open_runner
from .layout import RunLayout
from .models import LoadedModel, ModelSource, load, load_model
from .models.checkpoint import build, save_checkpoint
from .policy import PruningPolicy
from .prune import FeatureCache, apply_policy, collect_features
from .report import write_report
from .results import CompressResult, SearchOutcome, StageResult
from .search.ddpg import PRESETS, DDPGConfig
from .search.env import EnvConfig, Episode, PruningEnv, lower_bounds
from .search.run import check_fresh, run_search, top_policies
from .search.strategies import STRATEGIES, make_strategy
from .surgery import pruned_copy
from .train import EpochResult, Splits, TrainConfig, train_checkpoint

BASELINES = ("uniform", "shallow", "deep")  # rules, one cheap episode each: finalists, and the report's plot
# How a policy's accuracy is measured during the search: L1 selection alone; with least-squares reconstruction
# (intercepts folded into the BatchNorm after); with BatchNorm statistics re-estimated after the cut; or both.
REWARDS = ("select", "reconstruct", "bn", "reconstruct+bn")


@dataclass(frozen=True)
class Budget:
    """A latency budget: milliseconds on the target, or a fraction of the unpruned model's predicted latency."""

    ms: float | None = None
    ratio: float | None = None

    def __post_init__(self):
        require(
            (self.ms is None) != (self.ratio is None),
            "give exactly one budget: --latency-ms X (absolute) or --latency-ratio R (of the unpruned latency)",
        )
        if self.ratio is not None:
            require(
                math.isfinite(self.ratio) and 0 < self.ratio < 1,
                f"--latency-ratio {self.ratio} is out of range: use 0 < R < 1, e.g. 0.5",
            )
        if self.ms is not None:
            require(
                math.isfinite(self.ms) and self.ms > 0,
                f"--latency-ms {self.ms} is not a latency: give the budget in milliseconds, e.g. 40",
            )

    def resolve(self, unpruned_ms: float) -> float:
        return self.ratio * unpruned_ms if self.ratio is not None else float(self.ms)  # type: ignore[arg-type]

    def scaled(self, factor: float) -> Budget:
        return Budget(ms=self.ms * factor) if self.ms is not None else Budget(ratio=self.ratio * factor)  # type: ignore[operator]


@dataclass(frozen=True)
class SearchConfig:
    data: str
    strategy: str = "amc"
    episodes: int = 400
    seed: int = 0
    env: EnvConfig = EnvConfig()
    agent: DDPGConfig = DDPGConfig()
    reward_images: int = 1000  # val images each episode's accuracy is measured on
    calibration_images: int = 2000  # train images whose features the least-squares reconstruction uses
    finalists: int = 5  # best episodes re-scored on the whole val split before one is chosen (with the rules)
    reward: str = "reconstruct+bn"  # how each policy is pruned before its accuracy is measured (see REWARDS)
    bn_images: int = 500  # train images BatchNorm statistics are re-estimated on, with a "bn" reward
    # those images drawn as training augmentation presents them: the network's own statistics were gathered on such
    # images, and plain ones cost an unpruned resnet20 3.5 points of reward (BENCHMARKS.md, "Reward vs fine-tuned
    # accuracy")
    bn_augment: bool = True
    trust_table: bool = False  # skip checking the latency table against the target before the search

    def __post_init__(self):
        require(self.strategy in STRATEGIES, f"unknown strategy {self.strategy!r}: use one of {', '.join(STRATEGIES)}")
        require(self.reward in REWARDS, f"unknown reward {self.reward!r}: use one of {', '.join(REWARDS)}")
        require(
            min(self.episodes, self.reward_images, self.calibration_images, self.bn_images, self.finalists) >= 1,
            "episodes, reward images, calibration images, BatchNorm images and finalists must each be at least 1",
        )
        require(0 <= self.seed < 2**63, f"--seed {self.seed} must be a whole number in [0, 2^63)")


@dataclass(frozen=True)
class Hooks:
    """Progress callbacks; the CLI turns them into messages and progress bars."""

    on_message: Callable[[str], None] = lambda message: None
    on_stage: Callable[[int, int], None] = lambda index, stages: None  # a stage (0-based) of `stages` begins
    on_profile: Callable[[int, int], None] | None = None
    on_episode: Callable[[int, Episode, Episode], None] | None = None
    on_train_step: Callable[[int, int, float], None] | None = None
    on_epoch: Callable[[EpochResult], None] | None = None


FEATURES_VERSION = 2  # every layer's Gram matrix has the constant-1 column (for intercepts)


def features_for(loaded: LoadedModel, graph: ModelGraph, data: str, images: int, cache: Path) -> FeatureCache:
    """Sample the original model's features once per output folder (a resumed search reuses them)."""
    if cache.exists():
        blob = torch.load(cache, weights_only=True)
        if blob.get("version") == FEATURES_VERSION:
            return FeatureCache(blob["gram"], int(blob["rows"]))
    train = load_split(data, "train", loaded.spec.input_size, images)
    spec = loaded.spec
    batches = train.batches(images_per_pass(spec.input_size, FEATURES_AT_32PX))
    features = collect_features(loaded.model, graph, (normalize(x, spec.mean, spec.std) for x, _ in batches))
    with atomic_path(cache) as tmp:
        torch.save({"version": FEATURES_VERSION, "gram": features.gram, "rows": features.rows}, tmp)
    return features


@dataclass(frozen=True)
class NormalizedBatches:
    """Training images held as uint8 and normalised pass by pass, each time they are read: a quarter of the memory
    of holding them as floats (500 images at 224 px: 75 MB instead of 300 MB, for the whole search)."""

    batches: tuple[torch.Tensor, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __len__(self) -> int:  # empty, it is falsy like the list it replaces: apply_policy then leaves BN alone
        return len(self.batches)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for x in self.batches:
            yield normalize(x, self.mean, self.std).contiguous(memory_format=torch.channels_last)


def bn_batches(loaded: LoadedModel, data: str, images: int, augment: bool) -> NormalizedBatches:
    """Training images to re-estimate a pruned model's BatchNorm statistics on; with `augment`, as training
    augmentation presents them (one fixed draw), the images the network's own statistics were gathered on."""
    spec = loaded.spec
    per_pass = images_per_pass(spec.input_size, FEATURES_AT_32PX)
    split = load_split(data, "train", spec.input_size, images)
    generator = torch.Generator().manual_seed(0) if augment else None
    return NormalizedBatches(tuple(x for x, _ in split.batches(per_pass, augment=generator)), spec.mean, spec.std)


def reward_pruner(
    loaded: LoadedModel,
    graph: ModelGraph,
    config: SearchConfig,
    features_cache: Path,
    on_message: Callable[[str], None] = lambda message: None,
) -> Callable[[tuple[int, ...]], torch.nn.Module]:
    """How a search with `config` prunes a policy before scoring it (its `reward`, and the images that reward
    reconstructs and re-estimates on), as a function of the policy."""
    features, norms = None, None
    if "reconstruct" in config.reward:
        on_message("sampling features for least-squares reconstruction")
        features = features_for(loaded, graph, config.data, config.calibration_images, features_cache)
    if "bn" in config.reward:
        norms = bn_batches(loaded, config.data, config.bn_images, config.bn_augment)
    return lambda keep: apply_policy(loaded.model, graph, keep, features, norms)


def search_and_prune(
    loaded: LoadedModel,
    runner: Runner | None,
    table_path: Path,
    config: SearchConfig,
    budget: Budget,
    layout: RunLayout,
    resume: bool = False,
    hooks: Hooks = Hooks(),
    at_least_reachable: bool = False,
    table_check: TableCheck | None = None,
) -> SearchOutcome:
    """One search under `budget`, its best policy applied and saved in `layout`. The table is first completed on
    the target by `runner`; without one (the target is not at hand), it prices the search as it is. With
    `at_least_reachable`, a budget below the smallest model the settings allow is raised to that model's latency
    (an --enforce-measured retry aims lower than predicted, and a noisy measurement can aim it below anything
    reachable). `table_check` is the check an earlier search of the same run made: this one prices models on it
    instead of checking again (see `_run_stages`)."""
    spec, model = loaded.spec, loaded.model
    out = layout.root
    check_fresh(out, resume)  # before any profiling or sampling, not after
    graph = analyze(model, spec.input_size)
    # A pruned model (a later stage of an iterative schedule) has the same groups, only narrower. Its latency is
    # predicted on the unpruned architecture's table entries and calibration, so that every stage's budget and
    # prediction stand on one basis; its policy is recorded against that architecture too, so that its checkpoint
    # replays from the dense definition.
    dense = build(replace(spec, policy=None)) if spec.policy is not None else model
    base = analyze(dense, spec.input_size) if spec.policy is not None else graph
    out.mkdir(parents=True, exist_ok=True)

    table = LatencyTable.open(table_path, runner.target if runner is not None else None)
    check = None
    if runner is None:
        hooks.on_message(f"latency table {table_path}: used as it is ({table.target.describe()} is not measured)")
        predictor = LatencyPredictor(base, table)
    else:
        hooks.on_message(f"latency table {table_path}: profiling the shapes it lacks")
        target = runner.target
        predictor, check = checked_predictor(
            base,
            runner,
            table,
            lambda keep: latency_file(
                pruned_copy(dense, base, keep), spec.input_size, target.model_format, target.precision
            ),
            config.env.multiple,
            not config.trust_table,
            hooks.on_profile,
            hooks.on_message,
            table_check or (TableCheck.load(layout.table_check) if resume and layout.table_check.exists() else None),
        )
        if check is not None:
            check.save(layout.table_check)
    start_ms = predictor.predict(graph.channels)
    budget_ms = budget.resolve(predictor.predict(base.channels))
    smallest_ms = predictor.predict(lower_bounds(graph.channels, config.env))
    if at_least_reachable and budget_ms < smallest_ms:
        hooks.on_message(
            f"{budget_ms:.3f} ms is below the smallest model these settings reach: aiming at {smallest_ms:.3f} ms"
        )
        budget_ms = smallest_ms
    _check_settings(
        layout,
        resume,
        {
            **_flat(asdict(config)),
            "budget.ms": budget.ms,
            "budget.ratio": budget.ratio,
            "budget_ms": budget_ms,
            "start_ms": start_ms,
            "model": loaded.source,
            "table": str(table_path),
        },
    )

    prune = reward_pruner(loaded, graph, config, layout.features, hooks.on_message)
    reward_set = load_split(config.data, "val", spec.input_size, config.reward_images)
    memo: dict[tuple[int, ...], float] = {}

    def accuracy(keep) -> float:
        keep = tuple(keep)
        if keep not in memo:
            memo[keep] = evaluate(prune(keep), spec, reward_set)
        return memo[keep]

    env = PruningEnv(graph, budget_ms, predictor.predict, accuracy, config.env, predictor.group_latencies)
    strategy = make_strategy(config.strategy, env, model, config.seed, config.agent)
    hooks.on_message(f"searching with {config.strategy}: budget {budget_ms:.3f} ms of {start_ms:.3f} ms")
    run_search(env, strategy, config.episodes, out, resume, on_episode=hooks.on_episode)

    # The search's best reward is the maximum of many noisy estimates (a few thousand images at most), so it
    # favours lucky policies; re-scoring the leaders on all of val picks on a sharper estimate. The rule-based
    # policies under the same budget compete with a search's, so a search never returns less than a rule. Test
    # stays unseen.
    baselines = {name: make_strategy(name, env, model, config.seed).episode(env) for name in BASELINES}
    finalists = {k: config.strategy for k in top_policies(out, len(env.channels), config.finalists)}
    if not strategy.deterministic:
        finalists.update({e.keep: name for name, e in baselines.items() if e.keep not in finalists})
    val = load_split(config.data, "val", spec.input_size)
    hooks.on_message(f"re-scoring the {len(finalists)} best policies and rules on all {len(val)} val images")
    scored = [(env.finish_scored(k, evaluate(prune(k), spec, val)), source) for k, source in finalists.items()]
    best, chosen_from = max(scored, key=lambda scored_by: scored_by[0].reward)

    policy = PruningPolicy.from_keep(base, spec.arch, best.keep, [k / c for k, c in zip(best.keep, base.channels)])
    policy.save(layout.best_policy)
    pruned = prune(policy.keep)
    save_checkpoint(
        layout.pruned,
        pruned,
        replace(spec, policy=policy.to_dict()),
        {
            "top1_val": best.accuracy,
            "predicted_ms": best.latency_ms,
            "budget_ms": budget_ms,
            "start_predicted_ms": start_ms,
            "strategy": config.strategy,
            "chosen_from": chosen_from,
        },
    )
    return SearchOutcome(
        layout, budget_ms, start_ms, accuracy(env.channels), best, policy, baselines, check, chosen_from
    )


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level, `env.lbound`-style: what a resumed run compares, one value at a time."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _saved_settings(layout: RunLayout) -> dict[str, Any]:
    fix = f"delete {layout.config} and rerun with --resume to keep the search, or pass another --out"
    try:
        saved = json.loads(layout.config.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ToolchainError(f"{layout.config} is corrupt ({type(e).__name__}): {fix}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("budget_ms"), (int, float)):
        raise ToolchainError(f"{layout.config} is not a run's settings: {fix}")
    return saved


def _agent_preset(saved: dict[str, Any]) -> str | None:
    """The --agent preset whose DDPG settings a saved run's are, all of them: after the default changes, the one flag
    that continues a run started under the former one."""
    return next(
        (
            name
            for name, preset in PRESETS.items()
            if all(saved.get(key) == value for key, value in _flat({"agent": asdict(preset)}).items())
        ),
        None,
    )


def _check_settings(layout: RunLayout, resume: bool, settings: dict[str, Any]) -> None:
    """Refuse to resume a search with other settings, then record this run's."""
    if resume and layout.config.exists():
        saved = _saved_settings(layout)
        preset = _agent_preset(saved)
        agent_changed = any(saved.get(key) != value for key, value in settings.items() if key.startswith("agent."))
        # Free to change: a longer run, more finalists, a moved table; the budget and the starting prediction only
        # by a later --enforce-measured attempt's re-measurement (its budget follows the target's timing noise).
        check_resumable(
            layout.root,
            saved,
            settings,
            "pass another --out to start over",
            ("episodes", "finalists", "table", "trust_table", "budget_ms", "start_ms", "budget.ms", "budget.ratio"),
            f" (--agent {preset} for the agent.* ones)" if preset is not None and agent_changed else "",
        )
        if abs(saved["budget_ms"] - settings["budget_ms"]) > 0.1 * saved["budget_ms"]:
            raise ToolchainError(
                f"{layout.root} searched under a {saved['budget_ms']:.3f} ms budget, not "
                f"{settings['budget_ms']:.3f} ms: rerun with that budget to continue it, or pass "
                "another --out to start over"
            )
    with atomic_path(layout.config) as tmp:
        tmp.write_text(json.dumps(settings, indent=1) + "\n")


# --- the whole pipeline --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineConfig:
    search: SearchConfig
    budget: Budget | None = None
    stages: tuple[
        float, ...
    ] = ()  # instead of one budget: fractions of the unpruned latency, a search + fine-tune each
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=0, lr=0.01, warmup_epochs=0.0))
    precision: str = "fp32"
    limit: int | None = None  # at most this many train and test images (quick runs); None: all
    export_calibration_images: int = 500
    enforce_measured: bool = False
    max_attempts: int = 3  # searches in all, with --enforce-measured
    measure: bool = True  # False: search against the table only; the target (a phone not attached) is not used

    def __post_init__(self):
        require(
            (self.budget is None) != (not self.stages), "give one budget: --latency-ms, --latency-ratio or --stages"
        )
        if self.stages:
            require(
                all(0 < r < 1 for r in self.stages) and all(b < a for a, b in zip(self.stages, self.stages[1:])),
                f"--stages {','.join(map(str, self.stages))} must be decreasing fractions in (0, 1), e.g. "
                "0.5,0.35,0.25",
            )
            require(
                self.search.env.protocol == "resource",
                "--stages needs the resource protocol: its budgets are what each stage must meet",
            )
        require(
            self.precision in PRECISIONS, f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}"
        )
        require(self.limit is None or self.limit >= 1, f"--limit {self.limit} must be at least 1")
        require(self.measure or not self.enforce_measured, "--enforce-measured needs measurements: drop --no-measure")

    def stage_budgets(self) -> list[Budget]:
        """One search per stage; stage fractions are of the unpruned model's latency."""
        return [self.budget] if self.budget is not None else [Budget(ratio=r) for r in self.stages]


def compress_model(
    source: ModelSource,
    target: TargetConfig,
    config: PipelineConfig,
    out: Path,
    resume: bool = False,
    hooks: Hooks = Hooks(),
) -> CompressResult | None:
    """`toolchain compress`: `compress` a MODEL on a target, with the target's table (or the one given). Without
    measuring, the target is never opened: the table given names it."""
    distributed.init_from_env()
    if not config.measure and target.table is None:
        raise ToolchainError("--no-measure searches against a table alone: pass --table FILE, e.g. a phone's table")
    loaded = load(source)
    runner = open_runner(target) if config.measure else None
    return compress(loaded, runner, target.table_for(runner) if runner else target.table, config, out, resume, hooks)


def compress(
    loaded: LoadedModel,
    runner: Runner | None,
    table_path: Path,
    config: PipelineConfig,
    out: Path,
    resume: bool = False,
    hooks: Hooks = Hooks(),
) -> CompressResult | None:
    """Search, prune and fine-tune (per stage), export, measure, report. Under torchrun every process
    fine-tunes its shard; only rank 0 searches, exports and measures, and only it gets a result back.

    The run folder is rank 0's alone while this runs: a second process on the same --out (say a --resume started
    while the first still runs) is refused instead of writing the same files. Without a `runner`, the table's
    target is neither profiled nor measured: the result says so."""
    target = _target(runner, table_path)
    check_format(target.model_format, config.precision)
    if target.precision != config.precision:
        raise ToolchainError(
            f"the latency table is for {target.precision} models but the file is exported "
            f"{config.precision}: time the target at {config.precision} (--precision picks both)"
        )
    if not distributed.is_main():
        return _compress(loaded, runner, table_path, config, out, resume, hooks)
    out.mkdir(parents=True, exist_ok=True)
    with locked(out, wait=False):
        return _compress(loaded, runner, table_path, config, out, resume, hooks)


def _target(runner: Runner | None, table_path: Path) -> Target:
    return runner.target if runner is not None else LatencyTable.load(table_path).target


def _compress(
    loaded: LoadedModel,
    runner: Runner | None,
    table_path: Path,
    config: PipelineConfig,
    out: Path,
    resume: bool,
    hooks: Hooks,
) -> CompressResult | None:
    data, layout = config.search.data, RunLayout(out)
    # a folder that already holds a search is refused before the minutes of scoring and converting below; rank 0
    # decides, as it does in the search, so that a rank started late never mistakes rank 0's search for an old one
    distributed.on_main(partial(check_fresh, layout.stage(0, len(config.stage_budgets())).root, resume))
    target = _target(runner, table_path)
    model_format = target.model_format
    test = load_split(data, "test", loaded.spec.input_size, config.limit)
    # the data's class names replace a new model's placeholders, and every checkpoint and file after records them
    loaded = replace(loaded, spec=loaded.spec.match_classes(test.classes, loaded.source))
    spec = loaded.spec
    unpruned_top1 = evaluate(loaded.model, spec, test)
    calibration = (
        load_split(data, "train", spec.input_size, config.export_calibration_images)
        if config.precision == "int8"
        else None
    )

    # The unpruned model at the same precision, so that the speed-up is pruning's alone; converted once, before the
    # search, so that an op the converter cannot handle stops the run before the long part. It is kept in the run
    # folder: a resumed run reads it back instead of converting again, and a user can time it on a phone.
    def unpruned() -> bytes:
        kept = layout.model_file(spec.arch, model_format, pruned=False)
        if resume and kept.exists():
            return kept.read_bytes()
        blob = to_model_file(
            loaded.model,
            spec.input_size,
            model_format,
            config.precision,
            calibration_inputs(calibration, spec) if calibration is not None else None,
        )
        write_atomic(kept, blob)
        return blob

    unpruned_file = distributed.on_main(unpruned) or b""  # only rank 0 measures

    model_file = layout.model_file(spec.arch, model_format)  # every --enforce-measured attempt exports here

    def exported_model(run: RunLayout, stages: list[StageResult]) -> ExportResult:
        exported = _kept_export(run.exported, model_file) if resume else None
        if exported is not None:
            hooks.on_message(f"{model_file.name} exported and checked when this run started: kept")
            return exported
        hooks.on_message(
            f"exporting {model_file.name} ({config.precision}) and checking it against PyTorch on {len(test)} "
            "test images"
        )
        final = load_model(str(stages[-1].checkpoint))
        exported = export(final.model, final.spec, model_file, model_format, config.precision, test, calibration)
        _keep_export(run.exported, exported)
        return exported

    def export_and_measure(number: int, stages: list[StageResult]):
        """The attempt's export, and its and the unpruned model's timings on the target. A resumed attempt that was
        timed before replays those timings and leaves its export (None) to the end, where only the last attempt's
        is needed: timed again on a noisy target, it would move the next attempt's budget away from the one that
        attempt searched under."""
        run = layout.attempt(number)
        if runner is None:
            return exported_model(run, stages), None, None
        if resume and run.measured.exists():
            hooks.on_message(f"attempt {number}'s model, timed on {target.describe()} when this run started: kept")
            return None, *_kept_timings(run.measured)
        exported = exported_model(run, stages)
        hooks.on_message(f"measuring {model_file.name} and the unpruned model on {target.describe()}")
        timings = best_of_each(runner, [model_file.read_bytes(), unpruned_file])
        write_atomic(run.measured, json.dumps([t.as_record() for t in timings], indent=1) + "\n")
        return exported, *timings

    factor, attempt, table_check = 1.0, 0, None
    while True:
        attempt += 1
        stages = _run_stages(
            loaded, runner, table_path, config, layout.attempt(attempt), factor, resume, test, hooks, table_check
        )
        measurement = distributed.on_main(partial(export_and_measure, attempt, stages))
        again = None  # rank 0 measures and decides whether every process searches and fine-tunes once more
        if stages is not None and measurement is not None:
            exported, measured, unpruned_measured = measurement
            last = stages[-1].search
            if attempt == 1:
                budget = last.budget_ms  # later attempts search under tighter budgets, but this is the one to meet
                table_check = stages[0].search.table_check
            if (
                config.enforce_measured
                and measured is not None
                and measured.median_ms > budget
                and attempt < config.max_attempts
            ):
                # The table predicted this model's latency, the target ran it slower: aim that much lower, search again.
                ratio = last.best.latency_ms / measured.median_ms
                again = factor * ratio
                hooks.on_message(
                    f"measured {measured.median_ms:.3f} ms is over the {budget:.3f} ms budget: searching "
                    f"again with the budget tightened by {ratio:.3f}"
                )
        again = distributed.from_main(again)
        if again is None:
            break
        factor = again
    if stages is None:
        return None
    exported = exported or exported_model(layout.attempt(attempt), stages)  # the kept attempt's, if replayed
    result = CompressResult(
        layout,
        spec.arch,
        target.describe(),
        budget,
        stages[0].search.start_ms,
        unpruned_measured,
        unpruned_top1,
        len(unpruned_file),
        stages,
        exported,
        measured,
        attempt,
        len(test),
    )
    write_report(result)
    return result


def _keep_export(record: Path, exported: ExportResult) -> None:
    """Note what a search's export wrote, with the file's digest, so that --resume reads it back instead of
    converting and checking again. Every attempt writes the same file: the digest tells whose it holds now."""
    write_atomic(record, json.dumps({**asdict(exported), "sha256": _sha256(Path(exported.path))}, indent=1) + "\n")


def _kept_export(record: Path, model_file: Path) -> ExportResult | None:
    """The export `record` notes, if `model_file` and the files beside it are still the ones it wrote."""
    if not record.exists():
        return None
    kept = json.loads(record.read_text())
    digest = kept.pop("sha256")
    exported = ExportResult.from_dict(kept)
    written = [Path(p) for p in (exported.path, exported.sidecar, exported.labels)]
    if Path(exported.path) != model_file or not all(p.exists() for p in written) or _sha256(model_file) != digest:
        return None
    return exported


def _kept_timings(record: Path) -> list[Timing]:
    return [Timing.from_record(r) for r in json.loads(record.read_text())]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run_stages(
    loaded: LoadedModel,
    runner: Runner,
    table_path: Path,
    config: PipelineConfig,
    run: RunLayout,
    factor: float,
    resume: bool,
    test: ImageSet,
    hooks: Hooks,
    table_check: TableCheck | None = None,
) -> list[StageResult] | None:
    """Search (rank 0) and fine-tune (every process) once per stage. Rank 0 gets the stages' results, the other
    processes None.

    A run checks the latency table once, in its first search (or takes `table_check`, an earlier attempt's): later
    stages and --enforce-measured attempts price models on that check. Checking again would re-time the target's
    noise mid-run, and an attempt's tightened budget, a correction of the first table's predictions, would then
    land on different ones."""
    budgets = config.stage_budgets()
    current, results = loaded, []
    for i, budget in enumerate(budgets):
        stage = run.stage(i, len(budgets))
        hooks.on_stage(i, len(budgets))
        if len(budgets) > 1:
            hooks.on_message(f"stage {i + 1}/{len(budgets)}: {stage.root}")
        outcome = distributed.on_main(
            partial(
                search_and_prune,
                current,
                runner,
                table_path,
                config.search,
                budget.scaled(factor),
                stage,
                resume,
                hooks,
                factor < 1,
                table_check,
            )
        )
        if outcome is not None and table_check is None:
            table_check = outcome.table_check
        pruned = load_model(str(stage.pruned))
        top1_pruned = evaluate(pruned.model, pruned.spec, test)
        checkpoint, top1 = stage.pruned, top1_pruned
        if config.finetune.epochs:
            checkpoint = stage.finetuned
            top1 = finetune(pruned, loaded.model, config, checkpoint, resume, test, hooks)
        if outcome is not None:
            results.append(StageResult(outcome, top1_pruned, top1, checkpoint))
        current = load_model(str(checkpoint))
    return results if distributed.is_main() else None


def finetune(
    pruned: LoadedModel,
    teacher: torch.nn.Module,
    config: PipelineConfig,
    checkpoint: Path,
    resume: bool,
    test: ImageSet,
    hooks: Hooks,
) -> float:
    """Fine-tune a pruned model on train (distilling from `teacher` if configured); returns its test top-1."""
    if resume and checkpoint.exists():
        return float(load_model(str(checkpoint)).metrics["top1_test"])
    spec, data = pruned.spec, config.search.data
    train_set = load_split(data, "train", spec.input_size, config.limit)
    val = load_split(data, "val", spec.input_size, config.search.reward_images)
    hooks.on_message(
        f"fine-tuning for {config.finetune.epochs} epochs on {len(train_set)} train images"
        + (
            f", distilling from the unpruned model (weight {config.finetune.distill})"
            if config.finetune.distill
            else ""
        )
    )
    return train_checkpoint(
        pruned,
        Splits(train_set, val, test),
        config.finetune,
        checkpoint,
        teacher if config.finetune.distill else None,
        hooks.on_train_step,
        hooks.on_epoch,
        pruned.metrics,
    )["top1_test"]

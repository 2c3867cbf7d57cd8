"""`compress`: the whole AMC pipeline for one model and one latency budget, as typed functions.

`search_and_prune`: model -> channel groups -> latency table (profiled where it lacks shapes) -> search -> best
policy -> pruned checkpoint. `compress` runs it once per stage (AMC's iterative schedule prunes in steps and
fine-tunes after each), fine-tunes, exports the result for the target, measures it there, and writes a report.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from . import distributed
from .data import ImageSet, load_split, normalize
from .errors import ToolchainError
from .files import atomic_path, check_resumable
from .export import ExportResult, calibration_inputs, check_format, export, to_model_file
from .graph import analyze
from .surgery import pruned_copy
from .latency.predictor import LatencyPredictor
from .latency.profiler import profile
from .latency.runners import Runner, Timing, best_of_each
from .latency.table import LatencyTable
from .models import LoadedModel, load_model, save_checkpoint
from .models.checkpoint import build
from .policy import PruningPolicy
from .prune import FeatureCache, apply_policy, collect_features
from .search.ddpg import DDPGConfig
from .search.env import EnvConfig, Episode, PruningEnv
from .search.run import check_fresh, run_search, top_policies
from .search.strategies import make_strategy
from .report import write_report
from .train import EpochResult, TrainConfig, evaluate, train


BASELINES = ("uniform", "shallow", "deep")  # one cheap episode each, for the report's accuracy-vs-latency plot


@dataclass(frozen=True)
class SearchConfig:
    data: str
    latency_ms: float | None = None
    latency_ratio: float | None = None
    protocol: str = "resource"
    strategy: str = "amc"
    episodes: int = 400
    seed: int = 0
    lbound: float = 0.2
    rbound: float = 1.0
    channel_multiple: int = 8
    reward_images: int = 1000
    calibration_images: int = 2000
    warmup_episodes: int = 100
    finalists: int = 5  # best episodes re-scored on the whole val split before one is chosen
    sigma: float = 0.5  # DDPG exploration noise after warm-up, decayed by sigma_decay each episode
    sigma_decay: float = 0.95


@dataclass(frozen=True)
class SearchOutcome:
    budget_ms: float
    dense_ms: float  # predicted latency of the model the search started from
    best: Episode  # the chosen policy's episode; its accuracy is top-1 on the whole val split
    policy: PruningPolicy  # relative to the unpruned architecture, including any earlier stage's pruning
    checkpoint: Path
    dense_accuracy: float  # the starting model's top-1 on the reward images
    baselines: dict[str, Episode]  # rule-based policies under the same budget, scored like the search's episodes


def check_budget(config: SearchConfig) -> None:
    if (config.latency_ms is None) == (config.latency_ratio is None):
        raise ToolchainError("give exactly one budget: --latency-ms X (absolute) or --latency-ratio R (of the unpruned latency)")
    if config.latency_ratio is not None and not 0 < config.latency_ratio < 1:
        raise ToolchainError(f"--latency-ratio {config.latency_ratio} is out of range: use 0 < R < 1, e.g. 0.5")
    if config.latency_ms is not None and not config.latency_ms > 0:
        raise ToolchainError(f"--latency-ms {config.latency_ms} is not a latency: give the budget in milliseconds, e.g. 40")


def budget_of(config: SearchConfig, dense_ms: float) -> float:
    check_budget(config)
    return config.latency_ratio * dense_ms if config.latency_ratio is not None else float(config.latency_ms)  # type: ignore[arg-type]


def features_for(loaded: LoadedModel, graph, data: str, images: int, cache: Path) -> FeatureCache:
    """Sample the original model's features once per output folder (a resumed search reuses them)."""
    if cache.exists():
        blob = torch.load(cache, weights_only=True)
        return FeatureCache(blob["gram"], int(blob["rows"]))
    train = load_split(data, "train", loaded.spec.input_size, images)
    spec = loaded.spec
    features = collect_features(loaded.model, graph, (normalize(x, spec.mean, spec.std) for x, _ in train.batches(250)))
    with atomic_path(cache) as tmp:
        torch.save({"gram": features.gram, "rows": features.rows}, tmp)
    return features


def search_and_prune(loaded: LoadedModel, runner: Runner, table_path: Path, config: SearchConfig, out: Path,
                     resume: bool = False, on_profile: Callable[[int, int], None] | None = None,
                     on_episode: Callable[[int, Episode, Episode], None] | None = None,
                     on_stage: Callable[[str], None] = lambda message: None) -> SearchOutcome:
    spec, model = loaded.spec, loaded.model
    check_fresh(out, resume)  # before any profiling or sampling, not after
    graph = analyze(model, spec.input_size)
    # A pruned model (a later stage of an iterative schedule) has the same groups, only narrower; the policy is
    # recorded against the unpruned architecture so that its checkpoint replays from the dense definition.
    base = analyze(build(replace(spec, policy=None)), spec.input_size) if spec.policy is not None else graph
    out.mkdir(parents=True, exist_ok=True)

    table = LatencyTable.open(table_path, runner.target)
    on_stage(f"latency table {table_path}: profiling the shapes it lacks")
    profile(graph, runner, table, lambda keep: to_model_file(pruned_copy(model, graph, keep), spec.input_size, runner.model_format),
            config.channel_multiple, on_progress=on_profile)
    predictor = LatencyPredictor(graph, table)
    dense_ms = predictor.predict()
    budget = budget_of(config, dense_ms)
    settings = {**asdict(config), "budget_ms": budget, "dense_ms": dense_ms, "model": loaded.source, "table": str(table_path)}
    if resume and (out / "config.json").exists():
        saved = json.loads((out / "config.json").read_text())
        # Free to change: a longer run, more finalists, a moved table; the budget and the dense prediction only by
        # a later --enforce-measured attempt's re-measurement (its budget follows the target's timing noise).
        check_resumable(out, saved, settings, "pass another --out to start over",
                        ("episodes", "finalists", "table", "budget_ms", "dense_ms", "latency_ms", "latency_ratio"))
        if abs(saved["budget_ms"] - budget) > 0.1 * saved["budget_ms"]:
            raise ToolchainError(f"{out} searched under a {saved['budget_ms']:.3f} ms budget, not {budget:.3f} ms: rerun "
                                 "with that budget to continue it, or pass another --out to start over")
    with atomic_path(out / "config.json") as tmp:
        tmp.write_text(json.dumps(settings, indent=1) + "\n")

    on_stage("sampling features for least-squares reconstruction")
    features = features_for(loaded, graph, config.data, config.calibration_images, out / "features.pt")
    reward_set = load_split(config.data, "val", spec.input_size, config.reward_images)
    memo: dict[tuple[int, ...], float] = {}

    def accuracy(keep) -> float:
        keep = tuple(keep)
        if keep not in memo:
            memo[keep] = evaluate(apply_policy(model, graph, keep, features), spec, reward_set)
        return memo[keep]

    env = PruningEnv(graph, predictor.predict, accuracy,
                     EnvConfig(budget, config.protocol, config.lbound, config.rbound, config.channel_multiple), predictor.group_latencies)
    strategy = make_strategy(config.strategy, env, model, config.seed, DDPGConfig(warmup_episodes=config.warmup_episodes, sigma=config.sigma, sigma_decay=config.sigma_decay))
    on_stage(f"searching with {config.strategy}: budget {budget:.3f} ms of {dense_ms:.3f} ms")
    run_search(env, strategy, config.episodes, out, resume, on_episode=on_episode)

    # The search's best reward is the maximum of many noisy estimates (a few thousand images at most), so it
    # favours lucky policies; re-scoring the leaders on all of val picks on a sharper estimate. Test stays unseen.
    finalists = top_policies(out, env.full, config.finalists)
    val = load_split(config.data, "val", spec.input_size)
    on_stage(f"re-scoring the {len(finalists)} best policies on all {len(val)} val images")
    scored = [(k, evaluate(apply_policy(model, graph, k, features), spec, val)) for k in finalists]
    best = max((env.finish_scored(k, accuracy) for k, accuracy in scored), key=lambda e: e.reward)
    baselines = {name: make_strategy(name, env, model, config.seed).episode(env) for name in BASELINES}

    policy = PruningPolicy.from_keep(base, spec.arch, best.keep, [k / c for k, c in zip(best.keep, base.channels)])
    policy.save(out / "best_policy.json")
    pruned = apply_policy(model, graph, policy, features)
    checkpoint = out / "pruned.pt"
    save_checkpoint(checkpoint, pruned, replace(spec, policy=policy.to_dict()),
                    {"top1_val": best.accuracy, "predicted_ms": best.latency_ms, "budget_ms": budget,
                     "dense_predicted_ms": dense_ms, "strategy": config.strategy})
    return SearchOutcome(budget, dense_ms, best, policy, checkpoint, accuracy(env.full), baselines)


# --- the whole pipeline --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineConfig:
    search: SearchConfig
    finetune: TrainConfig = TrainConfig(epochs=0, lr=0.01, warmup_epochs=0.0)
    stages: tuple[float, ...] = ()  # latency fractions of the unpruned model, one search + fine-tune each
    precision: str = "fp32"
    limit: int | None = None  # at most this many train and test images (quick runs); None: all
    export_calibration_images: int = 500
    enforce_measured: bool = False
    max_attempts: int = 3  # searches in all, with --enforce-measured


@dataclass(frozen=True)
class StageResult:
    search: SearchOutcome | None  # None on ranks other than 0 under torchrun: they fine-tune but do not search
    top1_pruned: float  # test top-1 before fine-tuning
    top1_finetuned: float  # after fine-tuning (the same model when there is none)
    checkpoint: Path  # the stage's final checkpoint


@dataclass(frozen=True)
class CompressResult:
    out: Path
    model: str
    target: str
    budget_ms: float
    dense_predicted_ms: float
    dense_measured: Timing
    dense_top1: float
    dense_size_bytes: int
    stages: list[StageResult]
    exported: ExportResult
    measured: Timing
    attempts: int
    test_images: int

    @property
    def final(self) -> StageResult:
        return self.stages[-1]

    @property
    def within_budget(self) -> bool:
        return self.measured.median_ms <= self.budget_ms


@dataclass(frozen=True)
class Hooks:
    on_stage: Callable[[str], None] = lambda message: None
    on_profile: Callable[[int, int], None] | None = None
    on_episode: Callable[[int, Episode, Episode], None] | None = None
    on_train_step: Callable[[int, int, float], None] | None = None
    on_epoch: Callable[[EpochResult], None] | None = None


def check_config(config: PipelineConfig, model_format: str) -> None:
    """Refuse, before any work, settings that would otherwise fail only after hours of search and fine-tuning."""
    stages = config.stages
    if not stages:
        check_budget(config.search)
    elif any(not 0 < r < 1 for r in stages) or any(b >= a for a, b in zip(stages, stages[1:])):
        raise ToolchainError(f"--stages {','.join(map(str, stages))} must be decreasing fractions in (0, 1), e.g. 0.5,0.35,0.25")
    elif config.search.protocol != "resource":
        raise ToolchainError("--stages needs the resource protocol: its budgets are what each stage must meet")
    check_format(model_format, config.precision)


def stage_budgets(config: PipelineConfig) -> list[SearchConfig]:
    """One search per stage. Stage fractions are of the unpruned model's latency; without stages, the one
    search uses the configured budget."""
    if not config.stages:
        return [config.search]
    return [replace(config.search, latency_ms=None, latency_ratio=r) for r in config.stages]


def tightened(search: SearchConfig, factor: float) -> SearchConfig:
    if search.latency_ms is not None:
        return replace(search, latency_ms=search.latency_ms * factor)
    return replace(search, latency_ratio=(search.latency_ratio or 1.0) * factor)


def compress(loaded: LoadedModel, runner: Runner, table_path: Path, config: PipelineConfig, out: Path,
             resume: bool = False, hooks: Hooks = Hooks()) -> CompressResult | None:
    """Search, prune and fine-tune (per stage), export, measure, report. Under torchrun every process
    fine-tunes its shard; only rank 0 searches, exports and measures, and only it gets a result back."""
    check_config(config, runner.model_format)
    spec, data = loaded.spec, config.search.data
    test = load_split(data, "test", spec.input_size, config.limit)
    dense_top1 = evaluate(loaded.model, spec, test)
    calibration = load_split(data, "train", spec.input_size, config.export_calibration_images) if config.precision == "int8" else None
    # The unpruned model at the same precision, so that the speed-up is pruning's alone; converted once, before the
    # search, so that an op the converter cannot handle stops the run before the long part.
    dense_file = b""  # only rank 0 measures
    if distributed.is_main():
        dense_file = to_model_file(loaded.model, spec.input_size, runner.model_format, config.precision,
                                   calibration_inputs(calibration, spec) if calibration is not None else None)
    factor, attempt = 1.0, 0
    while True:
        attempt += 1
        folder = out if attempt == 1 else out / f"attempt-{attempt}"
        stages = _run_stages(loaded, runner, table_path, config, folder, factor, resume, test, hooks)
        again = None  # rank 0 measures and decides whether every process searches and fine-tunes once more
        if distributed.is_main():
            final = load_model(str(stages[-1].checkpoint))
            model_file = out / f"{spec.arch}-pruned.{runner.model_format}"
            hooks.on_stage(f"exporting {model_file.name} ({config.precision}) and checking it against PyTorch on {len(test)} test images")
            exported = export(final.model, final.spec, model_file, runner.model_format, config.precision, test, calibration)
            hooks.on_stage(f"measuring {model_file.name} and the unpruned model on {runner.target.describe()}")
            measured, dense_measured = best_of_each(runner, [model_file.read_bytes(), dense_file])
            last = stages[-1].search
            assert last is not None
            if attempt == 1:
                budget = last.budget_ms  # later attempts search under tighter budgets, but this is the one to meet
            if config.enforce_measured and measured.median_ms > budget and attempt < config.max_attempts:
                # The table predicted this model's latency, the target ran it slower: aim that much lower, search again.
                ratio = last.best.latency_ms / measured.median_ms
                again = factor * ratio
                hooks.on_stage(f"measured {measured.median_ms:.3f} ms is over the {budget:.3f} ms budget: searching again "
                               f"with the budget tightened by {ratio:.3f}")
        again = distributed.from_main(again)
        if again is None:
            break
        factor = again
    if not distributed.is_main():
        return None
    first = stages[0].search
    assert first is not None
    result = CompressResult(out, spec.arch, runner.target.describe(), budget, first.dense_ms,
                            dense_measured, dense_top1, len(dense_file), stages, exported, measured,
                            attempt, len(test))
    write_report(result)
    return result


def _run_stages(loaded: LoadedModel, runner: Runner, table_path: Path, config: PipelineConfig, folder: Path,
                factor: float, resume: bool, test: ImageSet, hooks: Hooks) -> list[StageResult]:
    searches = stage_budgets(config)
    current, results = loaded, []
    for i, search in enumerate(searches):
        stage_dir = folder if len(searches) == 1 else folder / f"stage-{i + 1}"
        if len(searches) > 1:
            hooks.on_stage(f"stage {i + 1}/{len(searches)}: {stage_dir}")
        outcome = None
        if distributed.is_main():
            if i > 0:  # later stages' fractions are of the unpruned model's latency, not of the previous stage's
                dense_ms = results[0].search.dense_ms  # type: ignore[union-attr]
                search = replace(search, latency_ms=search.latency_ratio * dense_ms, latency_ratio=None)  # type: ignore[operator]
            outcome = search_and_prune(current, runner, table_path, tightened(search, factor), stage_dir, resume,
                                       hooks.on_profile, hooks.on_episode, hooks.on_stage)
        distributed.barrier()
        pruned = load_model(str(stage_dir / "pruned.pt"))
        top1_pruned = evaluate(pruned.model, pruned.spec, test)
        checkpoint, top1 = stage_dir / "pruned.pt", top1_pruned
        if config.finetune.epochs:
            checkpoint = stage_dir / "finetuned.pt"
            top1 = finetune(pruned, loaded.model, config, checkpoint, resume, test, hooks)
        results.append(StageResult(outcome, top1_pruned, top1, checkpoint))
        current = load_model(str(checkpoint))
    return results


def finetune(pruned: LoadedModel, teacher: torch.nn.Module, config: PipelineConfig, checkpoint: Path, resume: bool,
             test: ImageSet, hooks: Hooks) -> float:
    """Fine-tune a pruned model on train (distilling from `teacher` if configured); returns its test top-1."""
    if resume and checkpoint.exists():
        return float(load_model(str(checkpoint)).metrics["top1_test"])
    spec, data = pruned.spec, config.search.data
    train_set = load_split(data, "train", spec.input_size, config.limit)
    val = load_split(data, "val", spec.input_size, config.search.reward_images)
    hooks.on_stage(f"fine-tuning for {config.finetune.epochs} epochs on {len(train_set)} train images"
                   + (f", distilling from the unpruned model (weight {config.finetune.distill})" if config.finetune.distill else ""))
    train(pruned.model, spec, train_set, config.finetune, val, checkpoint.with_name(f".{checkpoint.name}.resume"),
          hooks.on_train_step, hooks.on_epoch, teacher if config.finetune.distill else None)
    top1 = evaluate(pruned.model, spec, test)
    if distributed.is_main():
        save_checkpoint(checkpoint, pruned.model, spec, {**pruned.metrics, "top1_test": top1, "test_images": len(test),
                                                         "finetune_config": asdict(config.finetune)})
        checkpoint.with_name(f".{checkpoint.name}.resume").unlink(missing_ok=True)
    distributed.barrier()
    return top1

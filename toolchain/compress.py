"""`compress`: the whole AMC pipeline for one model and one latency budget, as one typed function.

model -> channel groups -> latency table (profiled where it lacks shapes) -> search -> best policy -> pruned
checkpoint. Fine-tuning, export and the on-device measurement plug in after `search_and_prune` returns.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from .data import load_split, normalize
from .errors import ToolchainError
from .export import to_model_file
from .graph import analyze, pruned_copy
from .latency.predictor import LatencyPredictor
from .latency.profiler import profile
from .latency.runners import Runner
from .latency.table import LatencyTable
from .models import LoadedModel, save_checkpoint
from .policy import PruningPolicy
from .prune import FeatureCache, apply_policy, collect_features
from .search.ddpg import DDPGConfig
from .search.env import EnvConfig, Episode, PruningEnv
from .search.run import check_fresh, run_search, top_policies
from .search.strategies import make_strategy
from .train import evaluate


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


@dataclass(frozen=True)
class SearchOutcome:
    budget_ms: float
    dense_ms: float
    best: Episode  # the chosen policy's episode; its accuracy is top-1 on the whole val split
    policy: PruningPolicy
    checkpoint: Path


def budget_of(config: SearchConfig, dense_ms: float) -> float:
    if (config.latency_ms is None) == (config.latency_ratio is None):
        raise ToolchainError("give exactly one budget: --latency-ms X (absolute) or --latency-ratio R (of the unpruned latency)")
    if config.latency_ratio is not None:
        if not 0 < config.latency_ratio <= 1:
            raise ToolchainError(f"--latency-ratio {config.latency_ratio} is out of range: use 0 < R <= 1, e.g. 0.5")
        return config.latency_ratio * dense_ms
    return float(config.latency_ms)


def features_for(loaded: LoadedModel, graph, data: str, images: int, cache: Path) -> FeatureCache:
    """Sample the original model's features once per output folder (a resumed search reuses them)."""
    if cache.exists():
        blob = torch.load(cache, weights_only=True)
        return FeatureCache(blob["gram"], int(blob["rows"]))
    train = load_split(data, "train", loaded.spec.input_size, images)
    spec = loaded.spec
    features = collect_features(loaded.model, graph, (normalize(x, spec.mean, spec.std) for x, _ in train.batches(250)))
    torch.save({"gram": features.gram, "rows": features.rows}, cache)
    return features


def search_and_prune(loaded: LoadedModel, runner: Runner, table_path: Path, config: SearchConfig, out: Path,
                     resume: bool = False, on_profile: Callable[[int, int], None] | None = None,
                     on_episode: Callable[[int, Episode, Episode], None] | None = None,
                     on_stage: Callable[[str], None] = lambda message: None) -> SearchOutcome:
    spec, model = loaded.spec, loaded.model
    if spec.policy is not None:
        raise ToolchainError("this checkpoint is already pruned: search on the dense model it came from")
    check_fresh(out, resume)  # before any profiling or sampling, not after
    graph = analyze(model, spec.input_size)
    out.mkdir(parents=True, exist_ok=True)

    table = LatencyTable.open(table_path, runner.target)
    on_stage(f"latency table {table_path}: profiling the shapes it lacks")
    profile(graph, runner, table, lambda keep: to_model_file(pruned_copy(model, graph, keep), spec.input_size, runner.model_format),
            config.channel_multiple, on_progress=on_profile)
    predictor = LatencyPredictor(graph, table)
    dense_ms = predictor.predict()
    budget = budget_of(config, dense_ms)

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
                     EnvConfig(budget, config.protocol, config.lbound, config.rbound, config.channel_multiple), predictor.op_latencies)
    strategy = make_strategy(config.strategy, env, model, config.seed, DDPGConfig(warmup_episodes=config.warmup_episodes))
    (out / "config.json").write_text(json.dumps({**asdict(config), "budget_ms": budget, "dense_ms": dense_ms,
                                                  "model": loaded.source, "table": str(table_path)}, indent=1) + "\n")
    on_stage(f"searching with {config.strategy}: budget {budget:.3f} ms of {dense_ms:.3f} ms")
    run_search(env, strategy, config.episodes, out, resume, on_episode=on_episode)

    # The search's best reward is the maximum of many noisy estimates (a few thousand images at most), so it
    # favours lucky policies; re-scoring the leaders on all of val picks on a sharper estimate. Test stays unseen.
    finalists = top_policies(out, env.full, config.finalists)
    val = load_split(config.data, "val", spec.input_size)
    on_stage(f"re-scoring the {len(finalists)} best policies on all {len(val)} val images")
    scored = [(k, evaluate(apply_policy(model, graph, k, features), spec, val)) for k in finalists]
    best = max((env.finish_scored(k, accuracy) for k, accuracy in scored), key=lambda e: e.reward)

    policy = PruningPolicy.from_keep(graph, spec.arch, best.keep, best.actions)
    policy.save(out / "best_policy.json")
    pruned = apply_policy(model, graph, policy, features)
    checkpoint = out / "pruned.pt"
    save_checkpoint(checkpoint, pruned, replace(spec, policy=policy.to_dict()),
                    {"top1_val": best.accuracy, "predicted_ms": best.latency_ms, "budget_ms": budget,
                     "dense_predicted_ms": dense_ms, "strategy": config.strategy})
    return SearchOutcome(budget, dense_ms, best, policy, checkpoint)

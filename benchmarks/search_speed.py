"""Where a search's time goes: each part of an AMC episode and the fixed costs around the episodes, timed apart
with the search's own functions and settings, and the sum they make for a whole search.

    .venv/bin/python benchmarks/search_speed.py --models resnet20 plain20

Per episode: the rollout (state features and the action wall, priced on the latency table), the reward (the
policy applied: L1 selection and least-squares reconstruction; BatchNorm statistics re-estimated on 500 train
images; top-1 on the 1,000 `val` reward images) and the DDPG updates an episode triggers after warm-up. Fixed:
sampling the features for reconstruction and re-scoring the finalists and the rules on all of `val`. Medians over
random policies through the wall, at 50% of the predicted host latency. The estimate for a search of `--episodes`
counts every episode's rollout, a reward for each distinct policy (`--distinct`; by default every episode's, an
upper bound: a search's rewards are memoised by policy) and the updates after warm-up. Writes the section
"Search speed (MODELS)" of BENCHMARKS.md.

A search runs on the CPU. `--devices cpu cuda` times BatchNorm re-estimation and scoring on a GPU too, side by side,
one row per device: what moving them there would give. `--table` prices the rollouts on a given table instead of
this host's (a machine with no table of its own).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import latency_table, table, write_section  # noqa: E402

from toolchain.compress import BASELINES, SearchConfig, bn_batches, features_for  # noqa: E402
from toolchain.data import load_split  # noqa: E402
from toolchain.evaluate import evaluate  # noqa: E402
from toolchain.graph import analyze  # noqa: E402
from toolchain.latency.predictor import LatencyPredictor  # noqa: E402
from toolchain.latency.runners import LiteRTHostRunner  # noqa: E402
from toolchain.latency.table import LatencyTable, default_table_path  # noqa: E402
from toolchain.models import load_model  # noqa: E402
from toolchain.prune import apply_policy, recalibrate_bn  # noqa: E402
from toolchain.search.ddpg import DDPGAgent  # noqa: E402
from toolchain.search.env import STATE_SIZE, PruningEnv  # noqa: E402


def seconds(work: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def synchronized(work: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """`work`, returning only once the device has finished it (GPU kernels run asynchronously)."""

    def run():
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


def breakdown(
    name: str, table_path: Path, target, policies: int, episodes: int, distinct: int, devices: list[torch.device]
) -> list[list]:
    """One model's rows, one per device the forward passes run on: seconds per part, and the estimated minutes of
    a search."""
    config = SearchConfig("cifar10")
    loaded = load_model(name)
    spec, model = loaded.spec, loaded.model
    graph = analyze(model, spec.input_size)
    predictor = LatencyPredictor(graph, LatencyTable.open(table_path, target))
    env = PruningEnv(
        graph, 0.5 * predictor.predict(), predictor.predict, lambda keep: 0.0, config.env, predictor.group_latencies
    )
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        features = features_for(loaded, graph, "cifar10", config.calibration_images, Path(scratch) / "features.pt")
        sampling = time.perf_counter() - started
    norms = bn_batches(loaded, "cifar10", config.bn_images, config.bn_augment)
    reward_set = load_split("cifar10", "val", spec.input_size, config.reward_images)
    val = load_split("cifar10", "val", spec.input_size)

    rng = np.random.default_rng(0)

    def random_action(state, t: int) -> float:
        return float(rng.uniform(config.env.lbound, config.env.rbound))

    rollout = seconds(lambda: env.rollout(random_action), policies)
    keeps = [env.rollout(random_action).keep for _ in range(policies)]
    cut, pruned = [], []
    for keep in keeps:
        started = time.perf_counter()
        pruned.append(apply_policy(model, graph, keep, features))
        cut.append(time.perf_counter() - started)
    agent = DDPGAgent(STATE_SIZE, len(graph.channels), config.env.lbound, config.env.rbound, config.agent)
    transitions = [rng.random(STATE_SIZE, dtype=np.float32) for _ in graph.channels]
    for _ in range(config.agent.warmup_episodes):  # fill the replay memory as warm-up does, without updates
        agent.observe(transitions, list(rng.uniform(0.2, 1.0, len(transitions))), -float(rng.random()))
    updates = seconds(lambda: agent.observe(transitions, [0.5] * len(transitions), -0.5), policies)

    learning = max(0, episodes - config.agent.warmup_episodes)
    rows = []
    for device in devices:
        # The CPU times the models as the search makes them. A GPU gets copies in the channels-last layout of the
        # images `evaluate` feeds them (weights in the other layout make cuDNN set up every pass anew), and one pass
        # first, so that its start-up (its context) is not timed.
        moved = (
            pruned
            if device.type == "cpu"
            else [deepcopy(m).to(device, memory_format=torch.channels_last) for m in pruned]
        )
        evaluate(moved[0], spec, reward_set)
        bn = [seconds(synchronized(lambda m=m: recalibrate_bn(m, norms), device), 1) for m in moved]
        top1 = [seconds(lambda m=m: evaluate(m, spec, reward_set), 1) for m in moved]
        finalist = statistics.median(seconds(lambda m=m: evaluate(m, spec, val), 1) for m in moved[:3])
        reward = statistics.median(cut) + statistics.median(bn) + statistics.median(top1)
        fixed = sampling + (config.finalists + len(BASELINES)) * finalist
        total = fixed + episodes * rollout + distinct * reward + learning * updates
        rows.append(
            [
                name,
                len(graph.channels),
                device.type,
                f"{rollout:.3f}",
                f"{statistics.median(cut):.3f}",
                f"{statistics.median(bn):.3f}",
                f"{statistics.median(top1):.3f}",
                f"{updates:.3f} ({len(graph.channels) * config.agent.updates_per_step})",
                f"{fixed:.0f}",
                f"{distinct * reward / 60:.1f}",
                f"{learning * updates / 60:.1f}",
                f"{total / 60:.1f}",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["resnet20", "plain20"])
    parser.add_argument("--policies", type=int, default=10, help="random policies each part is timed on")
    parser.add_argument("--episodes", type=int, default=400)
    parser.add_argument("--distinct", type=int, help="distinct policies a search evaluates (default: --episodes)")
    parser.add_argument(
        "--devices", nargs="+", choices=["cpu", "cuda"], default=["cpu"], help="where to time the forward passes"
    )
    parser.add_argument(
        "--table", type=latency_table, help="the latency table to price rollouts on (default: this host's)"
    )
    args = parser.parse_args()
    args.distinct = args.distinct or args.episodes
    if "cuda" in args.devices and not torch.cuda.is_available():
        parser.error("--devices cuda: this machine has no CUDA GPU; leave cuda out")
    target = None if args.table else LiteRTHostRunner().target
    table_path = args.table.path if args.table else default_table_path(target)
    devices = [torch.device(d) for d in args.devices]
    rows = [
        row
        for name in args.models
        for row in breakdown(name, table_path, target, args.policies, args.episodes, args.distinct, devices)
    ]
    agent = SearchConfig("cifar10").agent
    body = "\n".join(
        [
            f"Seconds per part of an episode, medians over {args.policies} random policies under 50% of the predicted",
            f"host latency (table {table_path.name}), with the default settings: reward on 1,000",
            "`val` images after reconstruction and BatchNorm re-estimation on 500 train images,",
            f"{agent.updates_per_step} DDPG update(s) per group after {agent.warmup_episodes} warm-up episodes, each"
            f" on a batch of {agent.batch_size}. `fixed`: sampling the reconstruction",
            "features and re-scoring the 5 finalists and 3 rules on all of `val`. Estimated minutes of an AMC",
            f"search of {args.episodes} episodes that evaluates {args.distinct} distinct policies (an AMC search",
            "may evaluate fewer: `distinct` in the search sections); `benchmarks/search.py` measures",
            "whole searches (its `minutes` column), which also load the data and the model.",
            *(
                [f"`cuda`: {torch.cuda.get_device_name()}, PyTorch {torch.__version__}; the CPU's parts on the CPU."]
                if "cuda" in args.devices
                else []
            ),
            "",
            table(
                [
                    "model",
                    "groups",
                    "forward passes on",
                    "rollout (s)",
                    "selection + reconstruction (s)",
                    "BatchNorm re-estimation (s)",
                    "top-1 on 1,000 images (s)",
                    "DDPG updates per episode (s, updates)",
                    "fixed (s)",
                    "rewards (min)",
                    "updates (min)",
                    "search (min)",
                ],
                rows,
            ),
        ]
    )
    print(body)
    write_section(
        f"Search speed ({', '.join(args.models)})",
        f"python benchmarks/search_speed.py --models {' '.join(args.models)} --policies {args.policies} "
        f"--episodes {args.episodes} --distinct {args.distinct} --devices {' '.join(args.devices)}"
        + (f" --table {args.table.path}" if args.table else ""),
        body,
    )


if __name__ == "__main__":
    main()

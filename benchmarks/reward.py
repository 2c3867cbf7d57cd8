"""Which reward predicts the outcome: for pruned policies of one model under one latency budget, the rank
correlation (Spearman) between each reward variant and top-1 after a short fine-tuning.

    .venv/bin/python benchmarks/reward.py                  # resnet20, 50% of its host latency, 14 policies

Policies: the rules (uniform, shallow, deep), Torch-Pruning's, and random ones through the action wall, all under
the budget. Reward variants (top-1 on 1,000 `val` images, no fine-tuning): L1 selection alone, with least-squares
reconstruction, with BatchNorm statistics re-estimated on 500 train images, or both; and both with the 500 images
augmented as in training (the zoo models' own statistics were gathered on augmented images, and re-estimating them
on plain ones costs the unpruned model points before any channel is cut: the section says how many; the search's
default is this augmented variant). Outcome: each policy pruned as the search's default prunes it (both, on the
augmented images), fine-tuned 2 epochs on 10,000 train images (SGD, lr 0.01, cosine), top-1 on all `test`. Writes
the section "Reward vs fine-tuned accuracy" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import spearman, table, write_section  # noqa: E402

from toolchain.compress import REWARDS, bn_batches, features_for  # noqa: E402
from toolchain.data import load_split  # noqa: E402
from toolchain.evaluate import evaluate  # noqa: E402
from toolchain.graph import analyze  # noqa: E402
from toolchain.latency.predictor import LatencyPredictor  # noqa: E402
from toolchain.latency.runners import LiteRTHostRunner  # noqa: E402
from toolchain.latency.table import LatencyTable, default_table_path  # noqa: E402
from toolchain.models import load_model  # noqa: E402
from toolchain.prune import apply_policy  # noqa: E402
from toolchain.search.env import PruningEnv  # noqa: E402
from toolchain.search.strategies import make_strategy  # noqa: E402
from toolchain.train import TrainConfig, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--random-policies", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=10000)
    parser.add_argument("--out", default="runs/bench-reward")
    args = parser.parse_args()
    started = time.perf_counter()
    loaded = load_model(args.model)
    spec, model = loaded.spec, loaded.model
    graph = analyze(model, spec.input_size)
    runner = LiteRTHostRunner()
    predictor = LatencyPredictor(graph, LatencyTable.open(default_table_path(runner.target), runner.target))
    budget = args.ratio * predictor.predict()
    features = features_for(loaded, graph, "cifar10", 2000, Path(args.out) / "features.pt")
    norms = bn_batches(loaded, "cifar10", 500, augment=False)
    augmented = bn_batches(loaded, "cifar10", 500, augment=True)
    reward_set = load_split("cifar10", "val", spec.input_size, 1000)
    train_set = load_split("cifar10", "train", spec.input_size, args.train_images)
    test = load_split("cifar10", "test", spec.input_size)

    env = PruningEnv(graph, budget, predictor.predict, lambda keep: 0.0, group_cost=predictor.group_latencies)
    policies = {name: make_strategy(name, env, model, 0).episode(env).keep for name in ("uniform", "shallow", "deep")}
    policies["torch-pruning"] = make_strategy("torch-pruning", env, model, 0).episode(env).keep
    rng = np.random.default_rng(0)
    for i in range(args.random_policies):
        policies[f"random {i + 1}"] = env.rollout(lambda state, t: float(rng.uniform(0.2, 1.0))).keep

    variants = {
        "select": lambda k: apply_policy(model, graph, k),
        "reconstruct": lambda k: apply_policy(model, graph, k, features),
        "bn": lambda k: apply_policy(model, graph, k, None, norms),
        "reconstruct+bn": lambda k: apply_policy(model, graph, k, features, norms),
        "reconstruct+bn, augmented": lambda k: apply_policy(model, graph, k, features, augmented),
    }
    assert set(REWARDS) < set(variants)
    rewards = {v: [] for v in variants}
    outcomes = []
    for name, keep in policies.items():
        for v, prune in variants.items():
            rewards[v].append(evaluate(prune(keep), spec, reward_set))
        pruned = variants["reconstruct+bn, augmented"](keep)  # as the search's default reward prunes it
        train(pruned, spec, train_set, TrainConfig(epochs=args.epochs, lr=0.01, warmup_epochs=0.0))
        outcomes.append(evaluate(pruned, spec, test))
        print(name, [f"{rewards[v][-1]:.3f}" for v in variants], f"fine-tuned {outcomes[-1]:.4f}", flush=True)
    unpruned = {
        "as trained": evaluate(model, spec, reward_set),
        "with its BatchNorm statistics re-estimated on plain images": evaluate(
            variants["bn"](graph.channels), spec, reward_set
        ),
        "on augmented images": evaluate(variants["reconstruct+bn, augmented"](graph.channels), spec, reward_set),
    }
    rows = [[v, f"{spearman(rewards[v], outcomes):.2f}", f"{100 * np.mean(rewards[v]):.1f}%"] for v in variants]
    policy_rows = [
        [name, *(f"{100 * rewards[v][i]:.1f}%" for v in variants), f"{100 * outcomes[i]:.2f}%"]
        for i, name in enumerate(policies)
    ]
    body = "\n".join(
        [
            f"{args.model}, {len(policies)} policies under {int(100 * args.ratio)}% of its predicted host latency "
            f"({budget:.3f} ms). Rewards: top-1 on 1,000 `val` images without fine-tuning. Outcome: top-1 on all "
            f"10,000 `test` images after {args.epochs} fine-tuning epochs on {args.train_images} train images, each "
            "policy pruned with reconstruction and BatchNorm re-estimation on augmented images (the search's default). "
            f"{(time.perf_counter() - started) / 60:.0f} minutes.",
            "",
            "The unpruned model on the reward images: "
            + ", ".join(f"{100 * top1:.1f}% {how}" for how, top1 in unpruned.items())
            + ".",
            "",
            table(["reward", "Spearman rank correlation with the outcome", "mean reward"], rows),
            "",
            table(["policy", *variants, "fine-tuned test top-1"], policy_rows),
        ]
    )
    print(body)
    write_section(
        "Reward vs fine-tuned accuracy",
        f"python benchmarks/reward.py --model {args.model} --ratio "
        f"{args.ratio} --random-policies {args.random_policies} --epochs {args.epochs}",
        body,
    )


if __name__ == "__main__":
    main()

"""Pruning engine: cost of evaluating one policy (as the search does) and what least-squares reconstruction buys.

    .venv/bin/python benchmarks/pruning.py [--model resnet20] [--policies 10]

Writes the section "Pruning engine" of BENCHMARKS.md. Uses the committed zoo checkpoint of the model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import table, write_section  # noqa: E402

from toolchain.data import load_split, normalize  # noqa: E402
from toolchain.evaluate import evaluate  # noqa: E402
from toolchain.graph import analyze  # noqa: E402
from toolchain.models import load_model  # noqa: E402
from toolchain.policy import PruningPolicy, round_channels  # noqa: E402
from toolchain.prune import apply_policy, collect_features  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--policies", type=int, default=10)
    args = parser.parse_args()
    loaded = load_model(args.model)
    spec, model = loaded.spec, loaded.model
    graph = analyze(model, spec.input_size)
    train = load_split("cifar10", "train", spec.input_size, limit=2000)
    val = load_split("cifar10", "val", spec.input_size)
    reward_set = load_split("cifar10", "val", spec.input_size, limit=1000)

    t = time.perf_counter()
    features = collect_features(model, graph, (normalize(x, spec.mean, spec.std) for x, _ in train.batches(250)))
    feature_s = time.perf_counter() - t

    rng = np.random.default_rng(0)
    apply_s, eval_s = [], []
    for _ in range(args.policies):
        keep = [round_channels(rng.uniform(0.2, 1.0), g.channels) for g in graph.groups]
        t = time.perf_counter()
        pruned = apply_policy(model, graph, keep, features)
        t1 = time.perf_counter()
        evaluate(pruned, spec, reward_set)
        t2 = time.perf_counter()
        apply_s.append(t1 - t)
        eval_s.append(t2 - t1)
    total = [a + e for a, e in zip(apply_s, eval_s)]

    rows = []
    dense = evaluate(model, spec, val)
    for ratio in (0.75, 0.5, 0.35):
        policy = PruningPolicy.uniform(graph, args.model, ratio)
        plain = evaluate(apply_policy(model, graph, policy), spec, val)
        rebuilt = evaluate(apply_policy(model, graph, policy, features), spec, val)
        rows.append(
            [f"uniform {ratio}", f"{100 * plain:.2f}%", f"{100 * rebuilt:.2f}%", f"{100 * (rebuilt - plain):+.2f}"]
        )
    body = "\n".join(
        [
            f"{args.model} (committed checkpoint, {100 * dense:.2f}% on the 5,000-image `val` split). Features: 10 "
            "positions per",
            f"image from {len(train)} training images, collected once in {feature_s:.1f} s.",
            "",
            "Evaluating one policy, as each search episode does (random per-group keep ratios in 0.2..1.0):",
            "",
            table(
                ["step", "median", "policies"],
                [
                    [
                        "select + least-squares rebuild + physical cut",
                        f"{statistics.median(apply_s):.2f} s",
                        args.policies,
                    ],
                    [f"top-1 on {len(reward_set)} val images", f"{statistics.median(eval_s):.2f} s", args.policies],
                    ["total per policy", f"{statistics.median(total):.2f} s", args.policies],
                ],
            ),
            "",
            "One-shot accuracy on `val` (no fine-tuning), L1 selection alone vs with least-squares reconstruction:",
            "",
            table(["policy", "selection only", "with reconstruction", "difference (points)"], rows),
        ]
    )
    print(body)
    write_section(
        "Pruning engine", f"python benchmarks/pruning.py --model {args.model} --policies {args.policies}", body
    )


if __name__ == "__main__":
    main()

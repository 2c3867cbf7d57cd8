"""AMC against the baselines on CIFAR-10 under a host latency budget (50% of the unpruned model's), no fine-tuning.

    .venv/bin/python benchmarks/search.py                          # resnet20 and plain20 (+ resnet56 if trained)
    .venv/bin/python benchmarks/search.py --models resnet20 --episodes 400

Every strategy runs in the same harness (same table, budget, reward set of 1,000 `val` images, features).
The best policy of each is then scored on the full `test` split and its whole `.tflite` timed on the host.
Writes the section "Search under a latency budget" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import table, write_section  # noqa: E402

from toolchain.compress import Budget, SearchConfig, search_and_prune  # noqa: E402
from toolchain.data import load_split  # noqa: E402
from toolchain.evaluate import evaluate  # noqa: E402
from toolchain.export import to_tflite  # noqa: E402
from toolchain.latency.runners import LiteRTHostRunner, best_of  # noqa: E402
from toolchain.latency.table import default_table_path  # noqa: E402
from toolchain.layout import RunLayout  # noqa: E402
from toolchain.models import load_checkpoint, load_model, zoo_checkpoint  # noqa: E402
from toolchain.search.ddpg import DDPGConfig  # noqa: E402
from toolchain.search.strategies import STRATEGIES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["resnet20", "plain20", "resnet56"])
    parser.add_argument("--episodes", type=int, default=400)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument(
        "--amc-sigma-decays",
        type=float,
        nargs="+",
        default=[0.95],
        help="AMC runs, one per exploration decay (0.95 is the paper's; slower decays explore longer)",
    )
    parser.add_argument("--out", default="runs/bench-search")
    args = parser.parse_args()
    runner = LiteRTHostRunner()
    table_path = default_table_path(runner.target)
    rows = []
    for name in args.models:
        if not zoo_checkpoint(name).exists():
            print(f"skipping {name}: no trained checkpoint committed", flush=True)
            continue
        loaded = load_model(name)
        test = load_split("cifar10", "test", loaded.spec.input_size)
        dense_test = evaluate(loaded.model, loaded.spec, test)
        runs = [(s, 0.95) for s in STRATEGIES if s != "amc"] + [("amc", d) for d in args.amc_sigma_decays]
        for strategy, decay in runs:
            label = strategy if decay == 0.95 else f"{strategy} (sigma decay {decay})"
            out = Path(args.out) / (f"{name}-{strategy}" + ("" if decay == 0.95 else f"-decay{decay}"))
            shutil.rmtree(out, ignore_errors=True)
            config = SearchConfig(
                "cifar10", strategy=strategy, episodes=args.episodes, agent=DDPGConfig(sigma_decay=decay)
            )
            t = time.perf_counter()
            outcome = search_and_prune(loaded, runner, table_path, config, Budget(ratio=args.ratio), RunLayout(out))
            seconds = time.perf_counter() - t
            pruned = load_checkpoint(outcome.layout.pruned)
            measured = best_of(runner, to_tflite(pruned.model, pruned.spec.input_size)).median_ms
            best = outcome.best
            rows.append(
                [
                    name,
                    label,
                    f"{100 * dense_test:.2f}%",
                    f"{100 * best.accuracy:.2f}%",
                    f"{100 * evaluate(pruned.model, pruned.spec, test):.2f}%",
                    f"{outcome.budget_ms:.3f}",
                    f"{best.latency_ms:.3f} ({100 * best.latency_ms / outcome.budget_ms:.1f}%)",
                    f"{measured:.3f} ({100 * (measured / best.latency_ms - 1):+.1f}%)",
                    1 if strategy in ("uniform", "shallow", "deep", "torch-pruning") else args.episodes,
                    f"{seconds / 60:.1f}",
                ]
            )
            print(rows[-1], flush=True)
    body = "\n".join(
        [
            f"Budget: {int(100 * args.ratio)}% of each unpruned model's predicted host latency (LiteRT + XNNPACK, 1 "
            "thread).",
            "Top-1 without fine-tuning, after L1 selection and least-squares reconstruction. The reward is top-1 on "
            "1,000",
            "`val` images (held out from train); the 5 best policies of a search are re-scored on all 5,000 `val` "
            "images",
            "and the best of those is chosen; `test` is scored once, on the chosen policy. Measured latency: the whole",
            "pruned model converted with litert-torch and timed end to end (fastest of three medians), next to the "
            "prediction.",
            "`amc` uses the paper's DDPG settings: 100 random warm-up episodes, then exploration noise sigma 0.5 "
            "decayed",
            "x0.95 per episode: 0.003 by episode 200 and 1e-7 by episode 400, so the agent barely explores after. The "
            "`sigma decay",
            "0.99` rows keep exploring (sigma 0.025 at episode 400). Both are chosen on `val` only, like every other "
            "row.",
            "",
            table(
                [
                    "model",
                    "strategy",
                    "unpruned test",
                    "chosen policy, val",
                    "test",
                    "budget ms",
                    "predicted ms (of budget)",
                    "measured ms (vs predicted)",
                    "episodes",
                    "minutes",
                ],
                rows,
            ),
        ]
    )
    print(body)
    write_section(
        "Search under a latency budget",
        "python benchmarks/search.py "
        + " ".join(
            [
                f"--models {' '.join(args.models)}",
                f"--episodes {args.episodes}",
                f"--ratio {args.ratio}",
                f"--amc-sigma-decays {' '.join(map(str, args.amc_sigma_decays))}",
            ]
        ),
        body,
    )


if __name__ == "__main__":
    main()

"""AMC against uniform pruning after fine-tuning: the whole `compress` pipeline on CIFAR-10 under a host latency
budget (50% of the unpruned model's predicted latency), same fine-tuning for both.

    .venv/bin/python benchmarks/compress.py                                   # every zoo model with a checkpoint
    .venv/bin/python benchmarks/compress.py --models resnet20 --finetune-epochs 3

Output folders are those of benchmarks/search.py (runs/bench-search/MODEL-STRATEGY): a search that script already
finished is resumed (it ends at once, with the same policy), so the two benchmarks report on the same policies.
For each: test top-1 before and after fine-tuning, after export (.tflite fp32, its own accuracy), measured host
latency and speed-up over the unpruned model. Writes the section "Compression with fine-tuning (MODELS)" of
BENCHMARKS.md, one per set of models, so that slow models can run with their own settings.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import table, write_section  # noqa: E402

from toolchain.compress import Budget, PipelineConfig, SearchConfig, compress  # noqa: E402
from toolchain.latency.runners import LiteRTHostRunner  # noqa: E402
from toolchain.latency.table import default_table_path  # noqa: E402
from toolchain.models import list_models, load_model, zoo_checkpoint  # noqa: E402
from toolchain.train import TrainConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=[m for m in list_models() if zoo_checkpoint(m).exists()])
    parser.add_argument("--strategies", nargs="+", default=["uniform", "amc"])
    parser.add_argument("--episodes", type=int, default=400)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--out", default="runs/bench-search")
    args = parser.parse_args()
    runner = LiteRTHostRunner()
    table_path = default_table_path(runner.target)
    rows = []
    for name in args.models:
        loaded = load_model(name)
        for strategy in args.strategies:
            config = PipelineConfig(
                SearchConfig("cifar10", strategy=strategy, episodes=args.episodes),
                Budget(ratio=args.ratio),
                finetune=TrainConfig(epochs=args.finetune_epochs, lr=0.01, warmup_epochs=0.0),
            )
            t = time.perf_counter()
            r = compress(loaded, runner, table_path, config, Path(args.out) / f"{name}-{strategy}", resume=True)
            assert r is not None
            search = r.final.search
            rows.append(
                [
                    name,
                    strategy,
                    f"{100 * r.unpruned_top1:.2f}%",
                    f"{100 * r.final.top1_pruned:.2f}%",
                    f"{100 * r.final.top1_finetuned:.2f}%",
                    f"{100 * r.exported.parity.top1_exported:.2f}%",
                    f"{100 * (r.final.top1_finetuned - r.unpruned_top1):+.2f}",
                    f"{r.budget_ms:.3f}",
                    f"{search.best.latency_ms:.3f}",
                    f"{r.measured.median_ms:.3f}",
                    f"{r.speedup:.2f}x",
                    f"{(time.perf_counter() - t) / 60:.1f}",
                ]
            )
            print(rows[-1], flush=True)
    body = "\n".join(
        [
            f"Budget: {int(100 * args.ratio)}% of each unpruned model's predicted host latency (LiteRT + XNNPACK, 1 "
            "thread). "
            f"Both strategies' policies are fine-tuned the same way: {args.finetune_epochs} epochs on the 45,000 "
            "`train` images, "
            "SGD + Nesterov, lr 0.01 with cosine decay, no distillation. Test top-1 on all 10,000 `test` images; "
            "`exported` is "
            "the fp32 `.tflite`'s own accuracy. Latency: the whole `.tflite` timed on the host, fastest of three "
            "medians; "
            "speed-up against the unpruned model timed the same way. Minutes: this run (a search or a fine-tuning that "
            "an earlier run finished is resumed, not redone).",
            "",
            table(
                [
                    "model",
                    "strategy",
                    "unpruned",
                    "pruned",
                    "fine-tuned",
                    "exported",
                    "vs unpruned (points)",
                    "budget ms",
                    "predicted ms",
                    "measured ms",
                    "speed-up",
                    "minutes",
                ],
                rows,
            ),
        ]
    )
    print(body)
    # A section per model set: models that take long on this machine run with their own (shorter) settings.
    write_section(
        f"Compression with fine-tuning ({', '.join(args.models)})",
        "python benchmarks/compress.py "
        + " ".join(
            [
                f"--models {' '.join(args.models)}",
                f"--strategies {' '.join(args.strategies)}",
                f"--episodes {args.episodes}",
                f"--ratio {args.ratio}",
                f"--finetune-epochs {args.finetune_epochs}",
            ]
        ),
        body,
    )


if __name__ == "__main__":
    main()

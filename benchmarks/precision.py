"""fp32 vs fp16 vs int8 `.tflite` exports of the zoo's trained models: file size, host latency, test accuracy.

    .venv/bin/python benchmarks/precision.py                      # every zoo model with a committed checkpoint
    .venv/bin/python benchmarks/precision.py --models resnet20

Each export passes its parity check against PyTorch (that is part of `export`); accuracy is then top-1 of the
file itself on the whole `test` split, run in ai-edge-litert. Latency: LiteRT + XNNPACK on this CPU, 1 thread,
the fastest of three medians of 200 runs. Writes the section "Export precision" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import table, write_section  # noqa: E402

from toolchain.data import load_split  # noqa: E402
from toolchain.export import PRECISIONS, export  # noqa: E402
from toolchain.latency.runners import LiteRTHostRunner, best_of  # noqa: E402
from toolchain.models import list_models, load_model, zoo_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=[m for m in list_models() if zoo_checkpoint(m).exists()])
    args = parser.parse_args()
    runner = LiteRTHostRunner()
    rows = []
    for name in args.models:
        loaded = load_model(name)
        test = load_split("cifar10", "test", loaded.spec.input_size)
        calibration = load_split("cifar10", "train", loaded.spec.input_size, 500)
        with tempfile.TemporaryDirectory() as tmp:
            for precision in PRECISIONS:
                result = export(
                    loaded.model,
                    loaded.spec,
                    Path(tmp) / f"{name}-{precision}.tflite",
                    "tflite",
                    precision,
                    test,
                    calibration,
                )
                timing = best_of(runner, Path(result.path).read_bytes())
                p = result.parity
                rows.append(
                    [
                        name,
                        precision,
                        f"{result.size_bytes / 1e6:.2f}",
                        f"{timing.median_ms:.3f}",
                        f"{100 * p.top1_exported:.2f}%",
                        f"{100 * p.top1_pytorch:.2f}%",
                        f"{100 * p.top1_agreement:.2f}%",
                    ]
                )
                print(rows[-1], flush=True)
    body = "\n".join(
        [
            "fp16: weights stored as float16, computed in float32. int8: ai-edge-quantizer's static recipe (int8 "
            "weights and",
            "activations, int8 input and output) calibrated on 500 `train` images. Accuracy of each file on all 10,000 "
            "`test`",
            "images; agreement: share of images where the file's top-1 class equals PyTorch's.",
            "",
            table(
                [
                    "model",
                    "precision",
                    "size MB",
                    "host latency ms",
                    "test top-1 (file)",
                    "test top-1 (PyTorch)",
                    "top-1 agreement",
                ],
                rows,
            ),
        ]
    )
    print(body)
    write_section("Export precision", "python benchmarks/precision.py --models " + " ".join(args.models), body)


if __name__ == "__main__":
    main()

"""Images per inference pass: how long `evaluate` takes over the same images at several pass sizes, and whether
top-1 stays the same. Every reward of a search is such an evaluation, so this sets the default
(`inference_images_per_pass` in toolchain/data.py).

    .venv/bin/python benchmarks/inference_passes.py

The CIFAR-10 zoo (its trained checkpoints) on 1,000 `val` images at 32 px, and three torchvision models (untrained:
their top-1 means nothing, their time does) on 48 of them upscaled to 224 px, decoded beforehand so that only
inference is timed. Pass sizes are measured in turn within each repeat (median of 5 repeats), so their ratios come
from the same minutes of a shared machine. PyTorch's default threads (all cores). Writes the section "Inference
passes" of BENCHMARKS.md.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import table, write_section  # noqa: E402

from toolchain.data import TensorImages, inference_images_per_pass, load_split  # noqa: E402
from toolchain.evaluate import evaluate  # noqa: E402
from toolchain.models import load_model  # noqa: E402

REPEATS = 5
AT_32PX = (8, 32, 128, 500)  # 500: the earlier default
AT_224PX = (1, 2, 4, 6, 10)  # 1: the earlier default scaled by pixels; 10: 500 scaled by pixels
CASES = {  # model -> (input size, images, images per pass)
    "resnet20": (32, 1000, AT_32PX),
    "mobilenet_v2_cifar": (32, 1000, AT_32PX),
    "torchvision:mobilenet_v2": (224, 48, AT_224PX),
    "torchvision:resnet18": (224, 48, AT_224PX),
    "torchvision:mobilenet_v3_small": (224, 48, AT_224PX),
}


def timings(name: str, size: int, count: int, passes: tuple[int, ...]) -> list[list[str]]:
    loaded = load_model(name, num_classes=None if size == 32 else 10)  # the zoo knows its classes
    images, labels = load_split("cifar10", "val", size, count).materialize()
    data = TensorImages(images, labels, loaded.spec.classes)
    evaluate(loaded.model, loaded.spec, data, passes[0])  # warm-up: first-call allocations
    seconds: dict[int, list[float]] = {n: [] for n in passes}
    top1 = {}
    for _ in range(REPEATS):
        for n in passes:
            t = time.perf_counter()
            top1[n] = evaluate(loaded.model, loaded.spec, data, n)
            seconds[n].append(time.perf_counter() - t)
    medians = {n: statistics.median(s) for n, s in seconds.items()}
    rows = []
    for n in passes:
        default = " (default)" if n == inference_images_per_pass(size) else ""
        rows.append(
            [
                f"{name} {size} px",
                f"{n}{default}",
                f"{1e3 * medians[n] / count:.2f}",
                f"{medians[passes[-1]] / medians[n]:.2f}x",
                f"{100 * top1[n]:.2f}%",
            ]
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    torch.manual_seed(0)
    rows = [row for name, case in CASES.items() for row in timings(name, *case)]
    body = "\n".join(
        [
            "`evaluate` over the same images at several images per pass: the CIFAR-10 zoo on 1,000 `val` images",
            "at 32 px; torchvision models, untrained, on 48 of them upscaled to 224 px. Milliseconds per image,",
            f"median of {REPEATS} repeats with the pass sizes measured in turn; speed against the largest pass of each",
            "model (500 CIFAR-sized images per pass, or as many pixels at 224 px: the earlier default). Smaller passes",
            "keep their activations in the CPU's caches, until a pass's fixed costs outweigh that.",
            "",
            table(["model", "images per pass", "ms per image", "speed vs largest pass", "top-1"], rows),
        ]
    )
    print(body)
    write_section("Inference passes", "python benchmarks/inference_passes.py", body)


if __name__ == "__main__":
    main()

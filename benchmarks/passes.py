"""Images per pass: how long inference and training take at several pass sizes, what a training pass adds to memory,
and whether top-1 stays the same. Every reward of a search is such an evaluation, and a training step runs its batch
pass by pass, so this sets both defaults (`inference_images_per_pass` and TRAINING_AT_32PX in toolchain/data.py).

    .venv/bin/python benchmarks/passes.py

Inference: the CIFAR-10 zoo (its trained checkpoints) on 1,000 `val` images at 32 px, and three torchvision models
(untrained: their top-1 means nothing, their time does) on 48 of them upscaled to 224 px, decoded beforehand so that
only inference is timed. Training: torchvision models at 224 px, a step of 16 images (forward and backward pass by
pass, then one SGD step, as `train` takes it). Pass sizes are measured in turn within each repeat (median of 5
repeats), so their ratios come from the same minutes of a shared machine. PyTorch's default threads (all cores).
Writes the sections "Inference passes" and "Training passes" of BENCHMARKS.md.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import proc_kb, table, write_section  # noqa: E402

from toolchain.data import (  # noqa: E402
    TRAINING_AT_32PX,
    TensorImages,
    images_per_pass,
    inference_images_per_pass,
    load_split,
    normalize,
)
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

TRAINING_STEP = 16  # images per training step: every pass size below divides it
TRAINING_CASES = {"torchvision:mobilenet_v2": (4, 8, 16), "torchvision:resnet18": (4, 8, 16)}  # at 224 px


def timings(name: str, size: int, count: int, passes: tuple[int, ...]) -> list[list[str]]:
    loaded = load_model(name, num_classes=None if size == 32 else 10)  # the zoo knows its classes
    images, labels = load_split("cifar10", "val", size, count).materialize()
    data = TensorImages(images, labels, loaded.spec.classes)
    evaluate(loaded.model, loaded.spec, data, passes[0])  # warm-up: first-call allocations
    top1 = {}

    def run(n: int) -> None:
        top1[n] = evaluate(loaded.model, loaded.spec, data, n)

    medians = medians_in_turn(passes, run)
    default = inference_images_per_pass(size)
    return pass_rows(f"{name} {size} px", passes, default, medians, count, "{:.2f}", top1, "{:.2%}")


def medians_in_turn(passes: tuple[int, ...], run: Callable[[int], None]) -> dict[int, float]:
    """Median seconds of `run(n)` per pass size n, the sizes measured in turn within each of REPEATS repeats."""
    seconds: dict[int, list[float]] = {n: [] for n in passes}
    for _ in range(REPEATS):
        for n in passes:
            t = time.perf_counter()
            run(n)
            seconds[n].append(time.perf_counter() - t)
    return {n: statistics.median(s) for n, s in seconds.items()}


def pass_rows(
    label: str,
    passes: tuple[int, ...],
    default: int,
    medians: dict[int, float],
    images: int,
    ms_format: str,
    last: dict[int, float],
    last_format: str,
) -> list[list[str]]:
    """One row per pass size: ms per image, speed against the largest pass, and a last column per pass size."""
    rows = []
    for n in passes:
        rows.append(
            [
                label,
                f"{n}{' (default)' if n == default else ''}",
                ms_format.format(1e3 * medians[n] / images),
                f"{medians[passes[-1]] / medians[n]:.2f}x",
                last_format.format(last[n]),
            ]
        )
        print(rows[-1], flush=True)
    return rows


def training_step(name: str, size: int = 224) -> Callable[[int], None]:
    """One training step of `name` on TRAINING_STEP images at `size` px, as a function of the images per pass;
    the first call allocates the gradients and the momentum."""
    loaded = load_model(name, num_classes=10)
    model = loaded.model.train().to(memory_format=torch.channels_last)
    images, labels = load_split("cifar10", "val", size, TRAINING_STEP).materialize()
    x = normalize(images, loaded.spec.mean, loaded.spec.std).contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(per_pass: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        for xs, ys in zip(x.split(per_pass), labels.split(per_pass)):
            (F.cross_entropy(model(xs), ys) * (len(ys) / len(labels))).backward()
        optimizer.step()

    return step


def memory_added_gb(name: str, per_pass: int) -> float:
    """How far a training step at `per_pass` images per pass raises the resident memory over one at a single image
    per pass. Run in a fresh process: an allocator that held a larger pass's memory before would reuse it. Linux
    resets the high-water mark (VmHWM) on writing 5 to /proc/self/clear_refs."""
    step = training_step(name)
    step(1)
    Path("/proc/self/clear_refs").write_text("5")
    before = proc_kb(Path("/proc/self/status").read_text(), "VmRSS")
    step(per_pass)
    return (proc_kb(Path("/proc/self/status").read_text(), "VmHWM") - before) / 2**20


def training_timings(name: str, passes: tuple[int, ...], size: int = 224) -> list[list[str]]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
        added = {n: pool.submit(memory_added_gb, name, n).result() for n in passes}
    step = training_step(name, size)
    step(1)
    medians = medians_in_turn(passes, step)
    default = images_per_pass(size, TRAINING_AT_32PX)
    return pass_rows(f"{name} {size} px", passes, default, medians, TRAINING_STEP, "{:.0f}", added, "{:.2f}")


def main() -> None:
    torch.manual_seed(0)
    training_rows = [row for name, passes in TRAINING_CASES.items() for row in training_timings(name, passes)]
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
    write_section("Inference passes", "python benchmarks/passes.py", body)
    body = "\n".join(
        [
            f"A training step of {TRAINING_STEP} images at 224 px (forward and backward pass by pass, then one SGD",
            f"step) at several images per pass: milliseconds per image, median of {REPEATS} repeats, pass sizes",
            "measured in turn; speed against the largest pass; how far a step raised the process's resident memory",
            "(after a step at one image per pass allocated the gradients). A pass's activations are held for its",
            "backward pass, so memory grows with its images. BatchNorm normalises each pass, which bounds how small",
            "a pass can usefully be.",
            "",
            table(
                ["model", "images per pass", "ms per image", "speed vs largest pass", "memory added (GB)"],
                training_rows,
            ),
        ]
    )
    print(body)
    write_section("Training passes", "python benchmarks/passes.py", body)


if __name__ == "__main__":
    main()

"""Training speed on this CPU: bf16 autocast, channels_last, torch.compile and a larger batch, side by side, and
whether each keeps the accuracy of a short schedule.

    .venv/bin/python benchmarks/training_speed.py

Throughput: images per second of training steps (forward, backward, SGD step) on CIFAR-10 batches, median of 3
repeats of 20 steps after 5 warm-up steps, each configuration measured in turn. Accuracy: resnet20 trained from
scratch for 2 epochs on 10,000 train images with each configuration, top-1 on 5,000 `val` images. Writes the
section "Training speed" of BENCHMARKS.md.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import table, write_section  # noqa: E402

from toolchain.data import load_split, normalize  # noqa: E402
from toolchain.evaluate import evaluate  # noqa: E402
from toolchain.models import load_model  # noqa: E402
from toolchain.train import TrainConfig, train  # noqa: E402

BASE = TrainConfig(epochs=2, batch_size=128, lr=0.1)
CONFIGS = {  # label -> (config, memory format)
    "fp32, NCHW": (BASE, torch.contiguous_format),
    "fp32, channels_last (current)": (BASE, torch.channels_last),
    "bf16 autocast, channels_last": (replace(BASE, bf16=True), torch.channels_last),
    "torch.compile, channels_last": (replace(BASE, compile=True), torch.channels_last),
    "batch 256, lr 0.2, channels_last": (replace(BASE, batch_size=256, lr=0.2), torch.channels_last),
}


def throughput(name: str, cfg: TrainConfig, memory_format, images: torch.Tensor, labels: torch.Tensor) -> float:
    model = load_model(name, pretrained=False).model.train().to(memory_format=memory_format)
    net = torch.compile(model) if cfg.compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True)
    b = cfg.batch_size
    x = images[:b].contiguous(memory_format=memory_format)
    y = labels[:b]

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = net(x).float()
        loss = torch.nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    rates = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(20):
            step()
        rates.append(20 * b / (time.perf_counter() - t))
    return statistics.median(rates)


def main() -> None:
    train_set = load_split("cifar10", "train", 32, 10000)
    val = load_split("cifar10", "val", 32)
    x = normalize(train_set.images[:512], (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    y = train_set.labels[:512]
    rows = []
    for name in ("resnet20", "mobilenet_v2_cifar"):
        rates = {label: throughput(name, cfg, fmt, x, y) for label, (cfg, fmt) in CONFIGS.items()}
        base = rates["fp32, channels_last (current)"]
        for label, rate in rates.items():
            accuracy = ""
            if name == "resnet20":
                torch.manual_seed(0)
                loaded = load_model(name, pretrained=False)
                cfg = CONFIGS[label][0]
                train(loaded.model, loaded.spec, train_set, cfg)
                accuracy = f"{100 * evaluate(loaded.model, loaded.spec, val):.2f}%"
            rows.append([name, label, f"{rate:.0f}", f"{rate / base:.2f}x", accuracy])
            print(rows[-1], flush=True)
    body = "\n".join(
        [
            "Training steps on 2 CPU cores (AVX-512 with BF16 and VNNI): images per second, and the speed against the",
            "current recipe (fp32, channels_last, batch 128). Accuracy: resnet20 after 2 epochs on 10,000 train images",
            "(val top-1 on 5,000), every configuration from the same seed.",
            "",
            table(["model", "configuration", "images/s", "vs current", "resnet20 val top-1, 2 epochs"], rows),
        ]
    )
    print(body)
    write_section("Training speed", "python benchmarks/training_speed.py", body)


if __name__ == "__main__":
    main()

"""`compress` on 224-px photos: minutes per phase and peak memory, for two dataset sizes.

    .venv/bin/python benchmarks/large_images.py                              # 10,000 and 40,000 train images
    .venv/bin/python benchmarks/large_images.py --sizes 2000 --episodes 10   # a quick look

The ImageFolder is CIFAR-10 upscaled to 256 px JPEGs (written once under --work; 1,000 test images), so the
pipeline reads, decodes, resizes and crops files the size of a phone app's training photos. The model is torchvision's
mobilenet_v2 at 224 px, untrained (nothing can be downloaded here): accuracies mean nothing, time and memory do.
Budget: `--latency-ms` at 60% of the unpruned model's measured host latency (LiteRT, 1 thread); the search uses
1,000 reward images and the default reward; one fine-tuning epoch streams the whole train split.

Each run is `toolchain compress` in a child process. A phase lasts from one of its progress messages to the next.
Memory: the proportional set size of the process and its DataLoader workers together, sampled every 0.2 s (peak),
and the main process's own resident high-water mark; both also per phase (the main process's resident size
sampled), to tell which phase sets the peak. Writes the section "Large images (EPISODES episodes)" of BENCHMARKS.md:
a shorter search (a quicker look at memory) keeps the full one's figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import proc_kb, table, write_section  # noqa: E402

from toolchain.export import latency_file  # noqa: E402
from toolchain.latency.runners import LiteRTHostRunner  # noqa: E402
from toolchain.models import load_model  # noqa: E402

MODEL = "torchvision:mobilenet_v2"
SIDE = 256
TEST_IMAGES = 1000
CLASSES = 10  # CIFAR-10's
# compress's progress messages -> the phase each starts
PHASES = {
    "latency table": "table",
    "sampling features": "features",
    "searching": "search",
    "re-scoring": "finalists",
    "fine-tuning": "fine-tune",
    "exporting": "export",
    "measuring": "measure",
}


def write_folder(archive: Path, root: Path, train_images: int) -> None:
    """`train_images` train images (and TEST_IMAGES test images) of the archive, as many of each class (the archive
    lists its images class by class), upscaled, as JPEGs."""
    done = root / ".complete"
    if done.exists():
        return
    per_class = {"train": -(-train_images // CLASSES), "test": -(-TEST_IMAGES // CLASSES)}
    written: dict[tuple[str, str], int] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            split = next((p for p in parts if p in per_class), None)
            if not member.isfile() or split is None or written.get((split, parts[-2]), 0) >= per_class[split]:
                continue
            out = root / split / parts[-2] / (Path(parts[-1]).stem + ".jpg")
            out.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(tar.extractfile(member)) as image:
                image.convert("RGB").resize((SIDE, SIDE), Image.BILINEAR).save(out, quality=90)
            written[split, parts[-2]] = written.get((split, parts[-2]), 0) + 1
    done.touch()


def tree_memory_mb(pid: int) -> tuple[float, float, float]:
    """Proportional set size (MB) of `pid` and every descendant, summed, and `pid`'s own resident size and
    high-water mark.

    PSS, not RSS, for the tree: the DataLoader workers are forked and share torch's pages with the main process, and
    summing their RSS would count those pages once per process. Descendants are found through each thread's
    `children` file: walking all of /proc five times a second would take a good part of a core from the run."""
    total, stack, own, own_peak = 0.0, [pid], 0.0, 0.0
    while stack:
        p = stack.pop()
        try:
            for children in Path(f"/proc/{p}/task").glob("*/children"):
                stack += [int(c) for c in children.read_text().split()]
            total += proc_kb(Path(f"/proc/{p}/smaps_rollup").read_text(), "Pss") / 1024
            if p == pid:
                status = Path(f"/proc/{p}/status").read_text()
                own, own_peak = proc_kb(status, "VmRSS") / 1024, proc_kb(status, "VmHWM") / 1024
        except OSError:
            continue
    return total, own, own_peak


@dataclass
class Phase:
    seconds: float = 0.0
    tree_mb: float = 0.0  # peak PSS of the process and its workers
    main_mb: float = 0.0  # peak sampled resident size of the main process


def run_compress(args: list[str]) -> tuple[dict[str, Phase], float, float, int]:
    """Run compress; return its phases, peak PSS of the process tree and the main process's resident high-water
    mark (MB), and the exit code."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolchain.cli", "compress", *args], stderr=subprocess.PIPE, text=True, bufsize=1
    )
    phases = {"load": Phase()}
    current = ["load"]
    peaks = [0.0, 0.0]

    def sample() -> None:
        while proc.poll() is None:
            tree, own, own_peak = tree_memory_mb(proc.pid)
            phase = phases[current[0]]
            phase.tree_mb, phase.main_mb = max(phase.tree_mb, tree), max(phase.main_mb, own)
            peaks[0], peaks[1] = max(peaks[0], tree), max(peaks[1], own_peak)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    for line in proc.stderr:
        print(line, end="", flush=True)
        label = next((label for prefix, label in PHASES.items() if line.startswith(prefix)), None)
        if label is not None:
            phases[current[0]].seconds += time.perf_counter() - started
            started = time.perf_counter()
            phases.setdefault(label, Phase())  # before the sampler can look it up
            current[0] = label
    code = proc.wait()
    sampler.join()
    phases[current[0]].seconds += time.perf_counter() - started
    return phases, peaks[0], peaks[1], code


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 40_000])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--work", default="runs/bench-large-images")
    args = parser.parse_args()
    work = Path(args.work)
    archive = Path(os.environ["TOOLCHAIN_CIFAR10"])

    runner = LiteRTHostRunner()
    unpruned_ms = runner.time_model(latency_file(load_model(MODEL).model, 224, "tflite")).median_ms
    budget_ms = round(0.6 * unpruned_ms, 3)
    print(f"{MODEL} at 224 px: {unpruned_ms:.2f} ms measured, budget {budget_ms} ms", flush=True)

    rows, phase_rows = [], []
    for size in args.sizes:
        folder = work / f"photos-{size}"
        t = time.perf_counter()
        write_folder(archive, folder, size)
        print(f"{folder}: ready in {time.perf_counter() - t:.0f} s", flush=True)
        out = work / f"run-{size}"
        shutil.rmtree(out, ignore_errors=True)
        phases, tree_mb, own_mb, code = run_compress(
            f"--model {MODEL} --num-classes {CLASSES} --data {folder} --device host --latency-ms {budget_ms} "
            f"--episodes {args.episodes} "
            f"--reward-images 1000 --finetune-epochs 1 --seed 0 --out {out}".split()
        )
        if code != 0:
            raise SystemExit(f"compress on {size} images failed with exit status {code}")
        rows.append(
            [
                f"{size:,}",
                ", ".join(f"{label} {p.seconds / 60:.1f}" for label, p in phases.items()),
                f"{sum(p.seconds for p in phases.values()) / 60:.1f}",
                f"{tree_mb / 1024:.2f}",
                f"{own_mb / 1024:.2f}",
            ]
        )
        phase_rows += [
            [f"{size:,}", label, f"{p.main_mb / 1024:.2f}", f"{p.tree_mb / 1024:.2f}"] for label, p in phases.items()
        ]
        print(rows[-1], flush=True)

    body = "\n".join(
        [
            f"torchvision mobilenet_v2 at 224 px (untrained), budget {budget_ms} ms = 60% of its measured "
            f"{unpruned_ms:.2f} ms (LiteRT + XNNPACK, 1 thread); {args.episodes} AMC episodes on 1,000 reward",
            "images, 1 fine-tuning epoch. The folder is CIFAR-10 upscaled to 256-px JPEGs (1,000 test images). A",
            "phase runs from one progress message of `compress` to the next (minutes). Memory: the proportional set",
            "size (PSS: shared pages split between the processes sharing them) of the process and its DataLoader",
            "workers summed (peak of 0.2 s samples), and the main process's resident high-water mark.",
            "",
            table(
                ["train images", "minutes per phase", "minutes in all", "peak PSS, all (GB)", "peak RSS, main (GB)"],
                rows,
            ),
            "",
            "Per phase: the main process's resident size and the PSS of it and its workers, peaks of the 0.2 s",
            "samples taken while the phase ran.",
            "",
            table(["train images", "phase", "peak RSS, main (GB)", "peak PSS, all (GB)"], phase_rows),
        ]
    )
    print(body)
    command = (
        "python benchmarks/large_images.py"
        + (f" --sizes {' '.join(map(str, args.sizes))}" if args.sizes != [10_000, 40_000] else "")
        + (f" --episodes {args.episodes}" if args.episodes != 200 else "")
    )
    write_section(f"Large images ({args.episodes} episodes)", command, body)


if __name__ == "__main__":
    main()

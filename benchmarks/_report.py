"""Shared by the benchmark scripts: each one owns a section of BENCHMARKS.md and rewrites only that section."""

from __future__ import annotations

import argparse
import os
import platform
import re
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "BENCHMARKS.md"
# The same default CIFAR-10 location as the Makefile and the tests.
os.environ.setdefault("TOOLCHAIN_CIFAR10", str(REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"))
HEADER = """# Benchmarks

Figures written by the scripts in `benchmarks/`; each section names the command that produced it. Timings are
medians over repeated runs on a shared 2-core x86-64 machine, so expect a few percent of noise between runs;
ratios are measured side by side in one run.
"""


def latency_table(text: str):
    """argparse type of a `--table` option: the table loaded, or the reason it cannot be, as one line."""
    from toolchain.errors import ToolchainError
    from toolchain.latency.table import LatencyTable

    try:
        return LatencyTable.load(text)
    except ToolchainError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def machine() -> str:
    """The CPU, its cores and the vector extensions XNNPACK picks kernels by: latency figures hold for these."""
    from toolchain.latency.runners import host_machine

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    host = host_machine()  # its core count is the CPUs this process may use (nproc would obey OMP_NUM_THREADS)
    isa = host.get("isa") or "flags unknown"
    return f"{cpu}, {host['cores']} cores, {isa}, Python {platform.python_version()}"


def write_section(name: str, command: str, body: str) -> None:
    """Replace (or append) the section `## name` of BENCHMARKS.md."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    section = f"## {name}\n\n`{command}` ({date.today().isoformat()}, {machine()})\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    BENCHMARKS.write_text(text.rstrip() + "\n")


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def proc_kb(proc_file: str, key: str) -> int:
    """The kB figure of `key` in a /proc file of "Key:   123 kB" lines (0 when absent)."""
    line = next((line for line in proc_file.splitlines() if line.startswith(key + ":")), f"{key}: 0 kB")
    return int(line.split()[1])


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged."""
    order = x.argsort()
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    for value in np.unique(x):
        r[x == value] = r[x == value].mean()
    return r


def spearman(a, b) -> float:
    return float(np.corrcoef(ranks(np.asarray(a)), ranks(np.asarray(b)))[0, 1])

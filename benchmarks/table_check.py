"""Checking a latency table before trusting it: what it costs, and what it does with a table that drifted.

    .venv/bin/python benchmarks/table_check.py

1. The time the check adds (a few entries and the unpruned model timed again), per model, median of 3.
2. The drift experiment: resnet20's host table with every entry doubled (a table from a slower machine, or a hot
   phone), and `compress --latency-ms` at 60% of the unpruned model's measured latency, with and without the check.
Writes the section "Latency table check" of BENCHMARKS.md.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import table, write_section  # noqa: E402

from toolchain.compress import Budget, PipelineConfig, SearchConfig, compress  # noqa: E402
from toolchain.errors import ToolchainError  # noqa: E402
from toolchain.export import latency_file  # noqa: E402
from toolchain.graph import analyze  # noqa: E402
from toolchain.latency.check import check_table  # noqa: E402
from toolchain.latency.profiler import profile  # noqa: E402
from toolchain.latency.runners import LiteRTHostRunner  # noqa: E402
from toolchain.latency.table import LatencyTable, default_table_path  # noqa: E402
from toolchain.models import load_model  # noqa: E402
from toolchain.surgery import pruned_copy  # noqa: E402


def main() -> None:
    runner = LiteRTHostRunner()
    path = default_table_path(runner.target)
    cost_rows = []
    for name in ("resnet20", "mobilenet_v2_cifar"):
        loaded = load_model(name)
        graph = analyze(loaded.model, 32)
        tbl = LatencyTable.open(path, runner.target)
        build = lambda k, m=loaded.model, g=graph: latency_file(pruned_copy(m, g, k), 32, "tflite")  # noqa: E731
        profile(graph, runner, tbl, build)
        unpruned = latency_file(loaded.model, 32, "tflite")
        checks = [check_table(graph, runner, tbl, unpruned) for _ in range(3)]
        cost_rows.append(
            [
                name,
                checks[0].entries,
                f"{statistics.median(c.seconds for c in checks):.1f} s",
                ", ".join(c.action for c in checks),
            ]
        )
        print(cost_rows[-1], flush=True)

    loaded = load_model("resnet20")
    unpruned_ms = runner.time_model(latency_file(loaded.model, 32, "tflite")).median_ms
    budget = 0.6 * unpruned_ms
    drift_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        drifted = json.loads(path.read_text())
        for entry in drifted["entries"].values():
            for key in ("median_ms", "p10_ms", "p90_ms"):
                entry[key] *= 2
        doubled = Path(tmp) / "doubled.json"
        doubled.write_text(json.dumps(drifted))
        for label, trust in (("checked (default)", False), ("trusted (--trust-table)", True)):
            out = Path(tmp) / label.split()[0]
            shutil.copy(doubled, Path(tmp) / "t.json")
            config = PipelineConfig(
                SearchConfig("cifar10", strategy="uniform", trust_table=trust), Budget(ms=budget), limit=500
            )
            try:
                result = compress(loaded, runner, Path(tmp) / "t.json", config, out)
            except ToolchainError as e:  # the doubled table can put the budget below anything it thinks reachable
                drift_rows.append([label, "-", "-", f"refused: {e}", "-", "-"])
                print(drift_rows[-1], flush=True)
                continue
            check = result.final.search.table_check
            drift_rows.append(
                [
                    label,
                    check.action if check else "-",
                    f"{check.factor:.3f}" if check else "-",
                    f"{result.final.search.best.latency_ms:.3f}",
                    f"{result.measured.median_ms:.3f}",
                    f"{100 * result.measured.median_ms / budget:.0f}%",
                ]
            )
            print(drift_rows[-1], flush=True)
    body = "\n".join(
        [
            "### What the check costs",
            "",
            "Before a search (and when `profile` or `predict` finds entries already there), a few of the table's",
            "entries (at most 8 of 20 us or more, spread over their latencies) and the unpruned model are timed again",
            "on the target. Host, LiteRT + XNNPACK, 1 thread; median of 3 checks.",
            "",
            table(["model", "entries timed", "time the check adds", "verdicts"], cost_rows),
            "",
            "### A table off by a factor of 2",
            "",
            f"resnet20's table with every entry doubled; `compress --latency-ms {budget:.3f}` (60% of the unpruned "
            f"model's measured {unpruned_ms:.3f} ms), the `uniform` strategy, no fine-tuning; the exported file "
            "measured on the host.",
            "",
            table(["table", "check", "factor applied", "predicted ms", "measured ms", "measured / budget"], drift_rows),
        ]
    )
    print(body)
    write_section("Latency table check", "python benchmarks/table_check.py", body)


if __name__ == "__main__":
    main()

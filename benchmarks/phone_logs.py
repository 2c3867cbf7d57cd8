"""Real Pixel 1 logs in a latency table: fit on some MobileNetV1 variants, predict another's end-to-end latency.

    .venv/bin/python benchmarks/phone_logs.py

Uses the `benchmark_model` logs in ../shared/datasets/pixel1-mobilenet-v1 (three runs per model) and the model
configs in latency_tables/model_configs/. Writes the section "Phone logs (Pixel 1)" of BENCHMARKS.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import table, write_section  # noqa: E402

from toolchain.latency.importer import config_graph, import_logs, load_model_config, read_logs  # noqa: E402
from toolchain.latency.predictor import LatencyPredictor  # noqa: E402
from toolchain.latency.runners import Target  # noqa: E402
from toolchain.latency.table import LatencyTable  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOGS = REPO.parent / "shared" / "datasets" / "pixel1-mobilenet-v1"
MODELS = {
    "mobilenet_v1_1.0": "mobilenet",
    "mobilenet_v1_0.75": "0.75mobilenet",
    "mobilenet_v1_amc_0.5flops": "0.5flops",
}


def main() -> None:
    data = {}
    for config, prefix in MODELS.items():
        _, sigs = load_model_config(REPO / "latency_tables" / "model_configs" / f"{config}.json")
        data[config] = (sigs, read_logs(sorted(LOGS.glob(f"{prefix}_run*.txt"))))
    rows = []
    for held, (sigs, logs) in data.items():
        fitted = LatencyTable(Target("pixel1", "benchmark_model", "2018", delegate="none", fingerprint="pixel1"))
        for other, (other_sigs, other_logs) in data.items():
            if other != held:
                import_logs(fitted, other_sigs, other_logs, other)
        kinds = {s.family for s in fitted.entries}
        priced = [s for s in sigs if s.family in kinds]
        unseen = [s for s in sigs if s.family not in kinds]
        measured = float(np.median([log.inference_avg_us for log in logs])) / 1e3
        unseen_ms = float(
            np.median([sum(op.ms_per_run for op, s in zip(log.ops, sigs) if s in unseen) for log in logs])
        )
        predicted = LatencyPredictor(config_graph(priced), fitted).predict()
        note = (
            f"{', '.join(sorted({s.kind for s in unseen}))} ({unseen_ms:.3f} ms measured) never logged in the fit set, "
            "left out"
            if unseen
            else ""
        )
        rows.append(
            [
                held,
                " + ".join(k for k in data if k != held),
                f"{measured:.2f}",
                f"{predicted:.2f}",
                f"{100 * (predicted / measured - 1):+.1f}%",
                note,
            ]
        )
        print(rows[-1])
    body = "\n".join(
        [
            "Each row fits a table on the per-op profiles of two variants (3 runs each, median per op; calibration",
            "line",
            "pooled over the fitted models' end-to-end means) and predicts the third variant from its op signatures",
            "alone. Channel counts between the fitted variants' are interpolated; wider ones are extrapolated",
            "linearly.",
            "",
            table(
                ["predicted model", "fitted on", "measured ms (median of 3 runs)", "predicted ms", "error", "note"],
                rows,
            ),
            "",
            "MobileNetV1 1.0 is wider (1024 channels) than anything in its fit set (at most 768), so its error is",
            "extrapolation; the two variants inside the fitted range are predicted within a few percent.",
        ]
    )
    write_section("Phone logs (Pixel 1)", "python benchmarks/phone_logs.py", body)


if __name__ == "__main__":
    main()

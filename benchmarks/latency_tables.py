"""Latency tables on the host: how long profiling takes, and how well the predictor matches whole models.

    .venv/bin/python benchmarks/latency_tables.py            # all models below, 20 variants each
    .venv/bin/python benchmarks/latency_tables.py --quick    # resnet20 only, 6 variants
    .venv/bin/python benchmarks/latency_tables.py --models resnet20 --runtime onnxruntime --threads 2

Writes the section "Latency tables (host)" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import table, write_section  # noqa: E402

from toolchain.export import latency_file, to_tflite  # noqa: E402
from toolchain.graph import analyze  # noqa: E402
from toolchain.latency.fidelity import measure_fidelity, plot_fidelity  # noqa: E402
from toolchain.latency.predictor import LatencyPredictor  # noqa: E402
from toolchain.latency.profiler import profile, shapes_to_profile  # noqa: E402
from toolchain.latency.runners import LiteRTHostRunner, OnnxRuntimeHostRunner  # noqa: E402
from toolchain.latency.table import LatencyTable  # noqa: E402
from toolchain.latency.tflite import single_op_model  # noqa: E402
from toolchain.models import load_model  # noqa: E402
from toolchain.surgery import pruned_copy  # noqa: E402

# how each runtime's variants become files, and what times them
RUNTIMES = {
    "litert": (LiteRTHostRunner, "converted whole with litert-torch", "LiteRT + XNNPACK"),
    "onnxruntime": (OnnxRuntimeHostRunner, "exported whole to ONNX", "ONNX Runtime, CPU execution provider"),
}
SESSIONS = 10  # timings of the same file: how far apart its own medians land
MODELS = [
    ("resnet20", None),
    ("resnet56", None),
    ("mobilenet_v2_cifar", None),
    ("torchvision:mobilenet_v2", 224),
    ("torchvision:resnet18", 224),
]


def profiling_speed(repeats: int) -> str:
    """Cold and warm profiling of resnet56's full channel grid, and single-op generation: flatbuffer vs converter."""
    loaded = load_model("resnet56", pretrained=False)
    graph = analyze(loaded.model, 32)
    shapes = shapes_to_profile(graph)
    runner = LiteRTHostRunner()
    cold, warm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            tbl = LatencyTable.open(Path(tmp) / "t.json", runner.target)
            profile(graph, runner, tbl, lambda keep: to_tflite(pruned_copy(loaded.model, graph, keep), 32))
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            profile(graph, runner, LatencyTable.open(Path(tmp) / "t.json", runner.target))
            warm.append(time.perf_counter() - t)
    sample = shapes[:: max(1, len(shapes) // 5)][:5]
    t = time.perf_counter()
    for s in sample * 20:
        single_op_model(s)
    builder_s = (time.perf_counter() - t) / (len(sample) * 20)
    t = time.perf_counter()
    for s in sample:
        to_tflite(_single_layer(s), s.h, s.c_in) if s.kind == "CONV_2D" else None
    converted = [s for s in sample if s.kind == "CONV_2D"]
    converter_s = (time.perf_counter() - t) / max(1, len(converted))
    return "\n".join(
        [
            f"resnet56, full channel grid (step 8): {len(shapes)} op shapes plus 2 whole-model calibration variants.",
            "",
            table(
                ["what", "median", "runs"],
                [
                    ["cold profile (empty table, incl. calibration)", f"{statistics.median(cold):.1f} s", repeats],
                    ["warm profile (nothing new to measure)", f"{statistics.median(warm):.2f} s", repeats],
                    ["one single-op model, flatbuffer builder", f"{1e3 * builder_s:.2f} ms", len(sample) * 20],
                    ["one single-op model, litert-torch conversion", f"{1e3 * converter_s:.0f} ms", len(converted)],
                ],
            ),
            "",
            f"Writing single-op models directly is {converter_s / builder_s:.0f}x faster than converting them; with "
            "the "
            f"converter, the {len(shapes)} shapes would spend ~{len(shapes) * converter_s / 60:.1f} min in conversion "
            "alone.",
        ]
    )


def _single_layer(sig) -> torch.nn.Module:
    conv = torch.nn.Conv2d(
        sig.c_in, sig.c_out, sig.kernel, sig.stride, (sig.kernel - 1) // 2 if sig.padding == "SAME" else 0
    )
    return torch.nn.Sequential(conv, torch.nn.ReLU()) if sig.act == "RELU" else conv


def sessions_note(runner: LiteRTHostRunner | OnnxRuntimeHostRunner) -> str:
    return f", the fastest of {runner.sessions} with {runner.threads} threads" if runner.sessions > 1 else ""


def quiet_session_ms(runner: LiteRTHostRunner | OnnxRuntimeHostRunner, model: bytes) -> float:
    """One timing of the whole file as a table's timings are taken (one fresh interpreter with 1 thread, the
    fastest of the runner's `sessions_per_timing` with several), once the machine is quiet enough: the timings'
    spread is then the file's own, not a spell's."""
    runner.quiet_enough()
    return runner.time_model(model).median_ms


def fidelity(
    models, samples: int, plots: Path, precision: str = "fp32", threads: int = 1, runtime: str = "litert"
) -> str:
    rows = []
    waited: list[str] = []  # one entry per look at a machine not quiet enough (other processes, or a slow spell)
    runner_class, made, timed_by = RUNTIMES[runtime]
    precisions = {"precision": precision} if runtime == "litert" else {}  # ONNX Runtime's runner: fp32 alone
    runner = runner_class(threads=threads, **precisions, on_wait=lambda what, left: waited.append(what))
    runner.wait_s = 600.0  # unattended: wait out a long spell rather than lose the run
    with tempfile.TemporaryDirectory() as tmp:
        tbl = LatencyTable.open(Path(tmp) / "host.json", runner.target)
        for name, size in models:
            loaded = load_model(name, num_classes=10 if size else None, input_size=size, pretrained=False)
            size = loaded.spec.input_size
            graph = analyze(loaded.model, size)

            def build(keep, model=loaded.model, graph=graph, size=size):
                return latency_file(pruned_copy(model, graph, keep), size, runner.model_format, precision)

            t = time.perf_counter()
            result = profile(graph, runner, tbl, build)
            profile_s = time.perf_counter() - t
            predictor = LatencyPredictor(graph, tbl)
            report = measure_fidelity(graph, predictor, runner, build, samples, seed=1)
            full = latency_file(loaded.model, size, runner.model_format, precision)
            sessions = sorted(quiet_session_ms(runner, full) for _ in range(SESSIONS))
            suffix = ("" if runtime == "litert" else f"-{runtime}") + (
                "" if (precision, threads) == ("fp32", 1) else f"-{precision}-t{threads}"
            )
            plot_fidelity(
                report,
                f"{name} {size}x{size}, host {runtime} {precision} {threads} thread(s)",
                plots / f"fidelity-{name.replace(':', '-')}{suffix}.png",
            )
            s = report.summary()
            rows.append(
                [
                    f"{name} {size}x{size}",
                    result.measured,
                    f"{profile_s:.0f} s",
                    f"{predictor.predict():.3f}",
                    f"{sessions[0]:.3f}-{sessions[-1]:.3f}",
                    s["samples"],
                    f"{100 * s['mape']:.1f}%",
                    f"{100 * s['within_5pct']:.0f}%",
                    f"{100 * s['within_10pct']:.0f}%",
                    f"{100 * s['max_abs_error']:.1f}%",
                    f"{s['unpruned_ratio']:.2f}",
                    f"{100 * s['share_mape']:.1f}%",
                    f"{100 * s['share_within_10pct']:.0f}%",
                    len(waited),
                ]
            )
            waited.clear()
            print(rows[-1], flush=True)
    return "\n".join(
        [
            "Random pruned variants (half uniform, half per-group keep ratios in 0.2..1.0, channels on multiples of",
            "8),",
            f"each {made} ({precision}) and timed end to end ({timed_by}, {threads}",
            "thread(s), median), against the table's prediction. Shapes profiled by earlier models in the list are",
            f"reused, as in real use. The unpruned model's file is also timed {SESSIONS} times as a table's shapes are",
            f"(each a fresh interpreter{sessions_note(runner)}): the range of",
            "those medians is how closely the same file agrees with itself, and so the closest a table can get.",
            "Each variant is timed side by side with the unpruned model: the last three columns give how fast the",
            "target ran then against its table (unpruned measured / predicted, median over the variants) and the",
            "errors of each variant's predicted share of the unpruned model against its measured share, which a",
            "slow or fast spell of the machine since profiling leaves alone. Every timing first waits while other",
            "processes keep the machine busy and, with several threads, while the threads are in a slow spell",
            "(`toolchain/latency/runners.py`, ThreadsProbe): `waits` counts the times a timing found it so and",
            "looked again a second later.",
            "",
            table(
                [
                    "model",
                    "shapes measured",
                    "profile time",
                    "full model, predicted (ms)",
                    f"full model, {SESSIONS} timings (ms)",
                    "variants",
                    "MAPE",
                    "within ±5%",
                    "within ±10%",
                    "worst",
                    "unpruned, measured / predicted",
                    "shares: MAPE",
                    "shares: within ±10%",
                    "waits",
                ],
                rows,
            ),
            "",
            "Scatter plots: `benchmarks/plots/fidelity-*.png`.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--models", nargs="+", help="NAME or NAME@SIZE (default: the list in this file)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runtime", choices=list(RUNTIMES), default="litert")
    args = parser.parse_args()
    if args.runtime != "litert" and args.precision != "fp32":
        parser.error(f"--runtime {args.runtime} times fp32 models only: leave out --precision")
    models = (
        [(m.split("@")[0], int(m.split("@")[1]) if "@" in m else None) for m in args.models]
        if args.models
        else MODELS[:1]
        if args.quick
        else MODELS
    )
    samples = 6 if args.quick else args.samples
    plots = Path(__file__).resolve().parent / "plots"
    command = (
        "python benchmarks/latency_tables.py"
        + (" --quick" if args.quick else "")
        + (f" --models {' '.join(args.models)}" if args.models else "")
    )
    if (args.precision, args.threads, args.runtime) != ("fp32", 1, "litert") or args.models:
        runtime = "" if args.runtime == "litert" else f"{args.runtime} "
        command += f" --precision {args.precision} --threads {args.threads}" + (
            f" --runtime {args.runtime}" if runtime else ""
        )
        fid = fidelity(models, samples, plots, args.precision, args.threads, args.runtime)
        print(fid)
        names = ", ".join(f"{n}" + (f" {s}px" if s else "") for n, s in models)
        write_section(
            f"Latency table fidelity ({names}; {runtime}{args.precision}, {args.threads} thread(s))", command, fid
        )
        return
    speed = profiling_speed(repeats=1 if args.quick else 3)
    print(speed, flush=True)
    fid = fidelity(models, samples, plots)
    print(fid)
    write_section(
        "Latency tables (host)", command, "### Profiling speed\n\n" + speed + "\n\n### Prediction fidelity\n\n" + fid
    )


if __name__ == "__main__":
    main()

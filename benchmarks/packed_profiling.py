"""Packed profiling: many op shapes per benchmark_model run instead of one.

    .venv/bin/python benchmarks/packed_profiling.py            # both 224-px models, 40 shapes each for agreement
    .venv/bin/python benchmarks/packed_profiling.py --quick    # resnet18 only, 12 shapes

Three measurements, one after the other (nothing else may run on the machine meanwhile):
1. agreement: an op's time inside a pack against its time alone, on the host's LiteRT + XNNPACK. Without an op
   profiler reachable from Python, "inside a pack" is a pack of PACK_COPIES copies of the op, divided by the copies.
2. runs per table: the default channel grid of the 224-px models, single-op against packed (the plan that
   `OpTimer` follows, with the probe agreeing for every family and for none), and the estimate for a phone: a fixed
   cost per run plus the ops' own time over the runner's warm-up and timed passes, scaled from this host to a Pixel 1
   by MobileNetV1 1.0 (123 ms there, `../shared/datasets/pixel1-mobilenet-v1`), which is timed here.
3. through the loopback test device (LiteRT's benchmark_model emulated over the real ADB protocol): a coarse grid of
   torchvision:resnet18 at 224 px profiled both ways, counting runs and ADB services opened, with wall time.

Writes the section "Packed profiling" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from itertools import groupby
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _report import table, write_section  # noqa: E402

from toolchain.graph import analyze  # noqa: E402
from toolchain.latency.android import PACK_PASSES as PACK_PASSES_  # noqa: E402
from toolchain.latency.packing import PROBE_TRIES, footprint, plan_packs  # noqa: E402
from toolchain.latency.profiler import profile, shapes_to_profile  # noqa: E402
from toolchain.latency.runners import LiteRTHostRunner, best_of_each  # noqa: E402
from toolchain.latency.table import LatencyTable  # noqa: E402
from toolchain.latency.tflite import packed_model, single_op_model  # noqa: E402
from toolchain.models import load_model  # noqa: E402

MODELS = ["torchvision:resnet18", "torchvision:mobilenet_v2"]
PACK_COPIES = 8
SECONDS_PER_RUN = 2.5  # a push, a process start, a model load: what each benchmark_model run costs beyond its ops
SINGLE_PASSES = 20 + 50  # the phone runner's warm-up and timed runs of one op
PACK_PASSES = sum(PACK_PASSES_)  # and of a pack
PIXEL1_MOBILENET_V1_MS = 123.0  # mobilenet_run{1,2,3}.txt, Inference (avg)


def grid(name: str):
    loaded = load_model(name, pretrained=False)
    return analyze(loaded.model, 224)


def agreement(name: str, samples: int, runner: LiteRTHostRunner) -> list[list[str]]:
    shapes = shapes_to_profile(grid(name))
    rng = np.random.default_rng(0)
    picked = [shapes[i] for i in sorted(rng.choice(len(shapes), min(samples, len(shapes)), replace=False))]
    models = [m for s in picked for m in (single_op_model(s), packed_model([s] * PACK_COPIES))]
    timings = best_of_each(runner, models, repeats=3)
    rows = []
    ratios = {s: (timings[2 * i + 1].median_ms / PACK_COPIES) / timings[2 * i].median_ms for i, s in enumerate(picked)}
    for kind, group in groupby(sorted(picked, key=lambda s: s.kind), key=lambda s: s.kind):
        r = np.array([ratios[s] for s in group])
        worst = max(ratios, key=lambda s: abs(ratios[s] - 1) if s.kind == kind else -1)
        rows.append(
            [
                name,
                kind,
                str(len(r)),
                f"{np.median(r):.3f}",
                f"{100 * np.mean(np.abs(r - 1) <= 0.05):.0f}%",
                f"{100 * np.mean(np.abs(r - 1) <= 0.10):.0f}%",
                f"{ratios[worst]:.2f} ({worst.key()})",
            ]
        )
    return rows


def pass_ms(runner: LiteRTHostRunner, models: list[bytes]) -> float:
    """One pass over each model, timed here and summed: the ops' own time."""
    return sum(t.median_ms for t in runner.time_models(models))


def mobilenet_v1_host_ms(runner: LiteRTHostRunner) -> float:
    import timm

    from toolchain.export import to_tflite

    model = timm.create_model("mobilenetv1_100", pretrained=False, num_classes=1001).eval()
    return best_of_each(runner, [to_tflite(model, 224)], repeats=3)[0].median_ms


def runs_per_table(name: str, runner: LiteRTHostRunner, phone_factor: float) -> list[str]:
    shapes = shapes_to_profile(grid(name))
    target = runner.target
    families = [list(g) for _, g in groupby(sorted(shapes, key=lambda s: (s.family, s)), key=lambda s: s.family)]
    packs = [p for f in families for p in plan_packs(f, lambda s: footprint(s, target))]
    probes = [plan_packs(f, lambda s: 0)[0][0] for f in families if len(f) > 1]
    packed_best = len(packs) + len(probes)
    packed_worst = len(shapes) + (2 * PROBE_TRIES - 1) * len(probes)  # the last try's single run is the probe's
    ops_s = pass_ms(runner, [packed_model(p) for p in packs]) / 1e3 * phone_factor  # one pass over every shape
    probes_s = pass_ms(runner, [single_op_model(s) for s in probes]) / 1e3 * phone_factor
    single_s = ops_s * SINGLE_PASSES
    best_s = ops_s * PACK_PASSES + probes_s * SINGLE_PASSES
    worst_s = ops_s * SINGLE_PASSES + probes_s * (PROBE_TRIES * PACK_PASSES + (PROBE_TRIES - 1) * SINGLE_PASSES)

    def phone_min(runs: int, compute_s: float) -> str:
        return f"{(runs * SECONDS_PER_RUN + compute_s) / 60:.0f}"

    return [
        name,
        str(len(shapes)),
        str(len(families)),
        str(len(packs)),
        str(len(shapes)),
        str(packed_best),
        str(packed_worst),
        f"{ops_s:.1f}",
        phone_min(len(shapes), single_s),
        phone_min(packed_best, best_s),
        phone_min(packed_worst, worst_s),
    ]


def through_loopback(name: str, size: int, channel_step: int, max_points: int, samples: int) -> list[list[str]]:
    """`name`'s table profiled on the loopback test device single-op and packed; with `samples`, how well each table
    predicts whole pruned variants timed on the same device."""
    from loopback_adbd import LoopbackDevice, fake_elf

    from android_bench.adb import load_signer
    from toolchain.export import latency_file
    from toolchain.latency.android import AndroidRunner
    from toolchain.latency.fidelity import measure_fidelity
    from toolchain.latency.predictor import LatencyPredictor
    from toolchain.surgery import pruned_copy

    model = load_model(name, pretrained=False).model
    graph = analyze(model, size)
    build = (lambda keep: latency_file(pruned_copy(model, graph, keep), size, "tflite")) if samples else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "adbkey"
        load_signer(key)
        binary = Path(tmp) / "benchmark_model"
        binary.write_bytes(fake_elf("arm64-v8a"))
        for pack in (False, True):
            pub = [(Path(tmp) / "adbkey.pub").read_text()]
            with LoopbackDevice(Path(tmp) / f"phone-{pack}", pub, benchmark_dialect="litert") as phone:
                runner = AndroidRunner(
                    "pixel", [phone.serial], benchmark_binary=str(binary), key_path=key, on_cooldown=lambda *a: None
                )
                table_ = LatencyTable.open(Path(tmp) / f"t-{pack}.json", runner.target)
                services, started = len(phone.services), time.perf_counter()
                result = profile(graph, runner, table_, build, channel_step, max_points, pack=pack)
                seconds = time.perf_counter() - started
                opened = len(phone.services) - services
                fidelity = (
                    measure_fidelity(graph, LatencyPredictor(graph, table_), runner, build, samples)
                    if samples
                    else None
                )
            rows.append(
                [
                    f"{name} {size} px",
                    "packed" if pack else "single-op",
                    str(result.measured),
                    str(result.runs),
                    str(result.packed),
                    f"{opened / result.measured:.2f}",
                    f"{seconds:.0f}",
                    f"{100 * fidelity.mape:.1f}% / {100 * fidelity.within(0.10):.0f}%" if fidelity else "-",
                ]
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    models = MODELS[:1] if args.quick else MODELS
    runner = LiteRTHostRunner()
    started = time.perf_counter()
    agree = [row for name in models for row in agreement(name, 12 if args.quick else 40, runner)]
    host_v1 = mobilenet_v1_host_ms(runner)
    factor = PIXEL1_MOBILENET_V1_MS / host_v1
    plans = [runs_per_table(name, runner, factor) for name in models]
    loop = through_loopback(MODELS[0], 224, 64, 4, samples=0)
    loop += through_loopback("resnet20", 32, 8, 16, samples=6 if args.quick else 12)
    minutes = (time.perf_counter() - started) / 60
    body = f"""
An op's time inside a pack against its time alone (LiteRT + XNNPACK, 1 thread, this host; inside = a pack of
{PACK_COPIES} copies of the op, over {
        PACK_COPIES
    }; fastest of 3 interleaved measurements each). Shapes drawn at random from each
224-px model's default channel grid. The phone runner probes every family this way before packing it and times
alone the families that disagree by more than 10% beyond noise.

{table(["model", "kind", "shapes", "median packed / alone", "within 5%", "within 10%", "furthest (shape)"], agree)}

Runs for each model's full default table (channel step 8, at most 16 points per group). Packed: one run per pack
(at most 64 ops and 48 MiB of one op family) plus one probe per family, when every probe agrees ("best") and when
none does in {PROBE_TRIES} tries ("worst": every shape alone, and the probes wasted). Phone minutes:
{SECONDS_PER_RUN} s per run plus the ops' own time over the passes of each run: {SINGLE_PASSES} for one op (20
warm-up + 50 timed), {PACK_PASSES} for a pack ({PACK_PASSES_[0]} + {PACK_PASSES_[1]}: a pass over a pack is long).
The ops' own time is one pass over every pack measured here, scaled by {factor:.1f}x, the ratio of MobileNetV1 1.0
on a Pixel 1 ({PIXEL1_MOBILENET_V1_MS:g} ms, 2018 TFLite, 1
thread) to the same network here ({host_v1:.1f} ms, timm mobilenetv1_100); "one pass, phone s" is that figure.

{
        table(
            [
                "model",
                "shapes",
                "families",
                "packs",
                "runs single-op",
                "runs packed (best)",
                "runs packed (worst)",
                "one pass, phone s",
                "phone min single-op",
                "phone min packed (best)",
                "phone min packed (worst)",
            ],
            plans,
        )
    }

Through the loopback test device (LiteRT's benchmark_model dialect over the real ADB protocol, the host's
interpreter behind it; its op profile divides each measured invoke by the ops' own times): {MODELS[0]} on a coarse
grid (channel step 64, at most 4 points per group), and resnet20 on its full grid, then asked to predict pruned
variants of resnet20 (random keep ratios) timed whole on the same device. The phone runner's default warm-up and
runs. ADB services: shell commands and file transfers opened on the device, per shape.

{
        table(
            [
                "model",
                "mode",
                "shapes",
                "benchmark runs",
                "shapes in packs",
                "ADB services per shape",
                "wall s",
                "MAPE / within 10%",
            ],
            loop,
        )
    }

{minutes:.0f} minutes in all.
"""
    print(body)
    write_section(
        "Packed profiling", "python benchmarks/packed_profiling.py" + (" --quick" if args.quick else ""), body
    )


if __name__ == "__main__":
    main()

"""Many op shapes per benchmark run: packed models, the plan, the probe that decides per family, and a phone's op
profile split back into table entries (the loopback test device running LiteRT's tool)."""

from dataclasses import dataclass

import pytest
from loopback_adbd import LoopbackDevice, fake_elf
from test_android_profile import FAST

from android_bench.adb import load_signer
from android_bench.parse import OpTiming
from android_bench.runner import ModelTiming
from toolchain.graph import analyze
from toolchain.latency import packing
from toolchain.latency.android import AndroidRunner, op_timings_of
from toolchain.latency.packing import MAX_OPS, OpTimer, plan_packs
from toolchain.latency.profiler import profile, shapes_to_profile
from toolchain.latency.runners import Target, Timing
from toolchain.latency.signature import OpSignature
from toolchain.latency.table import LatencyTable
from toolchain.latency.tflite import packed_model, read_signatures, single_op_model
from toolchain.models import create_model


def conv(c_in: int, c_out: int, h: int = 8) -> OpSignature:
    return OpSignature("CONV_2D", h, h, c_in, c_out, 3, 1, "SAME", "RELU")


MIXED = [conv(16, 32), OpSignature("ADD", 8, 8, 16, 16), OpSignature("DEPTHWISE_CONV_2D", 16, 16, 24, 24, 3, 2, "SAME")]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_a_packed_model_holds_each_op_once_in_order_and_runs(precision):
    from ai_edge_litert.interpreter import Interpreter

    model = packed_model(MIXED, precision=precision)
    assert read_signatures(model) == MIXED
    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    interpreter.invoke()
    # independent ops: one input per op (ADD reads two) and every op's output is a model output
    assert len(interpreter.get_input_details()) == 4 and len(interpreter.get_output_details()) == 3


def test_packs_keep_within_their_op_and_byte_bounds_largest_shape_first():
    sigs = [conv(c, c2) for c in range(8, 200, 8) for c2 in (8, 16)]
    packs = plan_packs(sigs, lambda s: s.c_in * 2**20)  # a pack's bytes run out before its op count
    assert sorted(s for p in packs for s in p) == sorted(sigs)
    assert all(sum(s.c_in for s in p) * 2**20 <= packing.MAX_BYTES or len(p) == 1 for p in packs)
    assert packs[0][0] == max(sigs, key=lambda s: s.c_in * s.c_out)
    many = plan_packs(sigs, lambda s: 1)
    assert [len(p) for p in many] == [MAX_OPS] * (len(sigs) // MAX_OPS) + [len(sigs) % MAX_OPS]


def test_a_profile_splits_into_per_op_timings_only_with_one_row_per_op():
    rows = tuple(
        OpTiming("Delegate/Convolution (NHWC, F32) IGEMM", f"[Delegate]:{i}", 0.1 * i, None, 2) for i in (1, 2)
    )
    timing = ModelTiming(avg_us=600.0, std_us=60.0, count=50, temperatures={"cpu": 30.0}, ops=rows)
    first, second = op_timings_of(timing, 2)
    assert (first.median_ms, second.median_ms) == (pytest.approx(0.2), pytest.approx(0.4))  # per call x calls
    assert first.p10_ms < first.median_ms < first.p90_ms and first.temperatures_c == {"cpu": 30.0}
    assert op_timings_of(timing, 3) is None  # e.g. one XNNPACK delegate node for the whole pack


@dataclass
class FakeProfilingRunner:
    """Ops cost c_in * c_out microseconds alone; inside a pack, ops of the `slower` kinds take 1.5x that. The first
    `flukes` ops timed alone take twice their time, as on a target busy for a moment."""

    slower: tuple[str, ...] = ()
    flukes: int = 0
    splits: bool = True  # whether the op profile lists one row per op
    target: Target = Target("phone", "benchmark_model", "1", fingerprint="fake")
    model_format: str = "tflite"

    def time_models(self, models):
        timings = []
        for model in models:
            timings.append(self._timing(read_signatures(model)[0], 2.0 if self.flukes else 1.0))
            self.flukes = max(self.flukes - 1, 0)
        return timings

    def time_op_packs(self, packs):
        out = []
        for model, ops in packs:
            sigs = read_signatures(model)
            assert len(sigs) == ops
            out.append([self._timing(s, 1.5 if s.kind in self.slower else 1.0) for s in sigs] if self.splits else None)
        return out

    @staticmethod
    def _timing(sig, factor=1.0):
        ms = factor * sig.c_in * sig.c_out / 1e3
        return Timing(ms, ms, ms, 1)


SHAPES = [conv(c, c2) for c in (8, 16, 24, 32) for c2 in (8, 16, 24)] + [
    OpSignature("ADD", 8, 8, c, c) for c in (8, 16, 24, 32, 40)
]


def timer_for(fake: FakeProfilingRunner) -> OpTimer:
    return OpTimer(fake, single_op_model)


def test_families_whose_packed_times_agree_are_packed_the_others_timed_alone():
    timer = timer_for(FakeProfilingRunner(slower=("ADD",)))
    measured = dict(timer(SHAPES))
    assert set(measured) == set(SHAPES)
    assert all(t.median_ms == pytest.approx(s.c_in * s.c_out / 1e3) for s, t in measured.items())  # ADDs alone
    assert timer.packed == 12  # the convolutions
    assert timer.runs == 2 + 2 * 2 + 4  # per family a pack and its probe, twice for the ADDs; four ADDs alone


def test_a_probe_that_disagrees_by_chance_is_retried_and_its_family_still_packed():
    timer = timer_for(FakeProfilingRunner(flukes=1))
    measured = dict(timer(SHAPES))
    assert all(t.median_ms == pytest.approx(s.c_in * s.c_out / 1e3) for s, t in measured.items())
    assert timer.packed == len(SHAPES)
    assert timer.runs == 2 * 2 + 2  # the first family probed twice, the other once


def test_without_a_per_op_profile_everything_is_timed_alone_after_one_try():
    timer = timer_for(FakeProfilingRunner(splits=False))
    measured = dict(timer(SHAPES))
    assert set(measured) == set(SHAPES) and timer.packed == 0
    assert timer.runs == len(SHAPES) + 1  # the one pack that came back without per-op rows


def test_a_phone_profile_in_packs_takes_fewer_runs_than_shapes(tmp_path):
    key = tmp_path / "adbkey"
    load_signer(key)
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(fake_elf("arm64-v8a"))
    graph = analyze(create_model("resnet20"), 32)
    wanted = shapes_to_profile(graph, channel_step=16)
    pub = [(tmp_path / "adbkey.pub").read_text()]
    with LoopbackDevice(tmp_path / "phone", pub, model="Pixel 6", benchmark_dialect="litert") as phone:
        # enough runs per model that a probe's two measurements are not mostly noise on a shared machine
        phone_runner = AndroidRunner(
            "pixel",
            [phone.serial],
            benchmark_binary=str(binary),
            key_path=key,
            on_cooldown=lambda *a: None,
            **{**FAST, "warmup_runs": 5, "num_runs": 20},
        )
        table = LatencyTable.open(tmp_path / "pixel.json", phone_runner.target)
        before = phone.runs
        result = profile(graph, phone_runner, table, channel_step=16)
        assert phone.runs - before == result.runs
        assert set(LatencyTable.load(tmp_path / "pixel.json").entries) == set(wanted)
        # Most of its 17 families hold 2-4 shapes, so even all packed (a pack and a probe each) take ~31 runs for
        # 81 shapes; a busy machine can make a 16-shape family's probes disagree twice and time it alone. The exact
        # run counts are pinned by the fake-runner tests above; here: most shapes packed, fewer runs than shapes.
        assert result.packed > len(wanted) / 2 and result.runs < len(wanted), result
        convs = {s: t for s, t in table.entries.items() if s.kind == "CONV_2D"}
        assert all(t.median_ms >= 0 for t in convs.values())  # the profiler prints whole microseconds: 1x1s read 0
        # within a family, a wider conv costs more: the rows are the ops' own times, not an even split
        family = max({s.family for s in convs}, key=lambda f: sum(s.family == f for s in convs))
        ranked = sorted((s for s in convs if s.family == family), key=lambda s: s.c_in * s.c_out)
        assert convs[ranked[-1]].median_ms > 2 * convs[ranked[0]].median_ms

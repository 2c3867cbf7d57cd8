"""The benchmark_model output parser, on real Pixel 1 logs (2018 layout) and on samples of the later layouts."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from android_bench.parse import BenchmarkLog, OpTiming, UnparsedOutput, parse_log, parse_stats

REPO = Path(__file__).resolve().parents[1]
PIXEL1 = REPO.parent / "shared" / "datasets" / "pixel1-mobilenet-v1"
PIXEL1_LOGS = sorted(PIXEL1.glob("*_run[123].txt"))
# Mean latency per model as given in the data set's README.md.
README_MEAN_MS = {"mobilenet": 123.0, "0.75mobilenet": 72.5, "0.5flops": 68.9}

# The samples below follow the real output of later benchmark_model versions: the headline and statistics lines as
# printed by tensorflow/lite/tools/benchmark/benchmark_model.cc, the tables as printed by
# tensorflow/core/util/stats_calculator.cc (each field "\t" + right-aligned to a fixed width, a type wider than its
# field pushing the row out), and the section banners of the profiling listener. Numbers and names are modelled on
# public logs: an SSD MobileNet run (scientific notation, p5/median/p95), XNNPACK's per-operator profile
# ("Convolution (NHWC, QC8) DWConv", "Delegate/...:N"), NNAPI/XNNPACK partitions named after several output tensors.

# Current layout, XNNPACK delegate on by default: no [start] column, an initialization profile to skip, a delegate
# partition named after two tensors, a custom op wider than the type field, scientific notation.
CURRENT_XNNPACK = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Graph: [/data/local/tmp/ssd_mobilenet_v2_coco.tflite]
INFO: Enable op profiling: [1]
INFO: Loaded model /data/local/tmp/ssd_mobilenet_v2_coco.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 67.3128
INFO: Initialized session in 5.579ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=1 curr=1357602 p5=1357602 median=1357602 p95=1357602

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=1249964 curr=1240143 min=1238588 max=1252566 avg=1.24027e+06 std=2565 p5=1238753 median=1239807 p95=1247415

INFO: Inference timings in us: Init: 5579, First inference: 1357602, Warmup (avg): 1.3576e+06, Inference (avg): 1.24027e+06
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=6.36328 overall=109.832
INFO: Profiling Info for Benchmark Initialization:
============================== Run Order ==============================
\t             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t ModifyGraphWithDelegate\t   31.446\t   31.446\t 93.623%\t 93.623%\t     0.000\t        1\tModifyGraphWithDelegate/0
\t         AllocateTensors\t    2.117\t    1.071\t  6.377%\t100.000%\t     0.000\t        2\tAllocateTensors/0

============================== Top by Computation Time ==============================
\t             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t ModifyGraphWithDelegate\t   31.446\t   31.446\t 93.623%\t 93.623%\t     0.000\t        1\tModifyGraphWithDelegate/0
\t         AllocateTensors\t    2.117\t    1.071\t  6.377%\t100.000%\t     0.000\t        2\tAllocateTensors/0

Number of nodes executed: 2
============================== Summary by node type ==============================
\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t ModifyGraphWithDelegate\t        1\t    31.446\t    93.623%\t    93.623%\t     0.000\t        1
\t         AllocateTensors\t        1\t     2.142\t     6.377%\t   100.000%\t     0.000\t        2

Timings (microseconds): count=1 curr=33588
Memory (bytes): count=0
2 nodes observed



INFO: Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
\t             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t   TfLiteXNNPackDelegate\t 1281.904\t 1178.342\t 95.038%\t 95.038%\t     0.000\t        1\t[raw_outputs/box_encodings, raw_outputs/class_predictions]:110
\tTFLite_Detection_PostProcess\t   62.371\t   61.517\t  4.962%\t100.000%\t     0.000\t        1\t[TFLite_Detection_PostProcess, TFLite_Detection_PostProcess:1, TFLite_Detection_PostProcess:2, TFLite_Detection_PostProcess:3]:109

============================== Top by Computation Time ==============================
\t             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t   TfLiteXNNPackDelegate\t 1281.904\t 1178.342\t 95.038%\t 95.038%\t     0.000\t        1\t[raw_outputs/box_encodings, raw_outputs/class_predictions]:110
\tTFLite_Detection_PostProcess\t   62.371\t   61.517\t  4.962%\t100.000%\t     0.000\t        1\t[TFLite_Detection_PostProcess, TFLite_Detection_PostProcess:1, TFLite_Detection_PostProcess:2, TFLite_Detection_PostProcess:3]:109

Number of nodes executed: 2
============================== Summary by node type ==============================
\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t   TfLiteXNNPackDelegate\t        1\t  1178.342\t    95.038%\t    95.038%\t     0.000\t        1
\tTFLite_Detection_PostProcess\t        1\t    61.517\t     4.962%\t   100.000%\t     0.000\t        1

Timings (microseconds): count=50 first=1344275 curr=1239001 min=1237432 max=1251977 avg=1.23986e+06 std=2611
Memory (bytes): count=0
2 nodes observed

"""

# Current LiteRT with XNNPACK's own profiler: one row per XNNPACK operator, types and names with spaces and commas,
# operators called several times per run (avg ms is per call).
CURRENT_XNNPACK_OPERATORS = """\
INFO: Initialized session in 24.871ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=68 first=9873 curr=7302 min=7011 max=9873 avg=7431.6 std=402 p5=7054 median=7342 p95=8120

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=141 first=7188 curr=7054 min=6950 max=7744 avg=7102.9 std=118 p5=6968 median=7080 p95=7311

INFO: Inference timings in us: Init: 24871, First inference: 9873, Warmup (avg): 7431.6, Inference (avg): 7102.9
INFO: Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
\t             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t                QUANTIZE\t    0.051\t    0.048\t  0.698%\t  0.698%\t     0.000\t        1\t[tfl.quantize]:0
\tConvolution (NHWC, QC8) IGEMM\t    0.412\t    0.398\t  5.788%\t  6.486%\t     0.000\t        1\tDelegate/Convolution (NHWC, QC8) IGEMM:0
\tConvolution (NHWC, QC8) DWConv\t    0.431\t    0.183\t 34.599%\t 41.085%\t     0.000\t       13\tDelegate/Convolution (NHWC, QC8) DWConv:1
\tConvolution (NHWC, QC8) GEMM\t    0.406\t    0.301\t 56.908%\t 97.993%\t     0.000\t       13\tDelegate/Convolution (NHWC, QC8) GEMM:2
\tGlobal Average Pooling (NWC, QS8)\t    0.013\t    0.012\t  0.175%\t 98.168%\t     0.000\t        1\tDelegate/Global Average Pooling (NWC, QS8):3
\tFully Connected (NC, QS8) GEMM\t    0.127\t    0.121\t  1.760%\t 99.927%\t     0.000\t        1\tDelegate/Fully Connected (NC, QS8) GEMM:4
\t              DEQUANTIZE\t    0.006\t    0.005\t  0.073%\t100.000%\t     0.000\t        1\t[MobilenetV1/Predictions/Reshape_1]:31

Timings (microseconds): count=141 first=7024 curr=6871 min=6803 max=7598 avg=6912.4 std=113
Memory (bytes): count=0
7 nodes observed

"""

# 2020-2022: the current headline, but the tables still carry the [start] column.
START_COLUMN = """\
Initialized session in 17.187ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=275728

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=259311 curr=258127 min=257201 max=262488 avg=258702 std=1104

Inference timings in us: Init: 17187, First inference: 275728, Warmup (avg): 275728, Inference (avg): 258702
Profiling Info for Benchmark Initialization:
============================== Run Order ==============================
\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t         AllocateTensors\t            0.000\t    0.412\t    0.412\t100.000%\t100.000%\t     0.000\t        1\tAllocateTensors/0

Timings (microseconds): count=1 curr=412
Memory (bytes): count=0
1 nodes observed



Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t                 CONV_2D\t            0.000\t   87.754\t   60.957\t 23.569%\t 23.569%\t     0.000\t        1\t[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0
\t       DEPTHWISE_CONV_2D\t           60.957\t   53.628\t   49.870\t 19.282%\t 42.851%\t     0.000\t        1\t[MobilenetV1/MobilenetV1/Conv2d_1_depthwise/Relu6]:1
\t                 CONV_2D\t          110.827\t  134.346\t  147.808\t 57.149%\t100.000%\t     0.000\t        1\t[MobilenetV1/MobilenetV1/Conv2d_1_pointwise/Relu6]:2

Timings (microseconds): count=50 first=275728 curr=258104 min=257188 max=262470 avg=258635 std=1101
Memory (bytes): count=0
3 nodes observed
"""

# 2019, as pasted from a terminal (tabs turned into spaces): "Init" and "no stats" in the headline, [start] column.
SPACES_2019 = """\
Initialized session in 1.892ms
Running benchmark for at least 1 iterations and at least 0.5 seconds
count=6 first=91810 curr=85097 min=84834 max=91810 avg=86184.3 std=2519

Running benchmark for at least 50 iterations and at least 1 seconds
count=50 first=118810 curr=114219 min=88216 max=129193 avg=115062 std=7678

Average inference timings in us: Warmup: 86184.3, Init: 1892, no stats: 115062
============================== Run Order ==============================
                     [node type]                  [start]         [first]        [avg ms]            [%]          [cdf%]  [mem KB]      [times called]  [Name]
                         CONV_2D                    0.000           5.567           7.237         6.297%          6.297%     0.000              1       [MobilenetV2/Conv/Relu6]
               DEPTHWISE_CONV_2D                    7.241           3.518           3.726         3.243%          9.539%     0.000              1       [MobilenetV2/expanded_conv/depthwise/Relu6]

2 nodes observed
"""

# LiteRT's CompiledModel tool (//litert/tools:benchmark_model, 2.2), as adb's shell merges its stdout (TFLITE_LOG:
# parameters, statistics) and stderr (LITERT_LOG, "[file:line]" after the level): no "Inference timings" headline but a
# BENCHMARK RESULTS block in ms, then --use_profiler's tables as litert/runtime/profiler_summarizer.cc pads them with
# spaces. [times called] counts all 70 runs (20 warm-up, 50 regular); the GEMM node runs twice per run (two
# partitions, one delegate index).
LITERT_PROFILER = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [50]
INFO: Min runs duration (seconds): [0]
INFO: Num threads: [2]
INFO: Min warmup runs: [20]
INFO: Graph: [/data/local/tmp/mobilenet_v2.tflite]
INFO: Use profiler: [1]
INFO: [benchmark_litert_model.cc:271] Loading model from: /data/local/tmp/mobilenet_v2.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 13.9786
INFO: Initialized session in 48.112ms.
INFO: Running benchmark for at least 20 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=20 first=9318 curr=6102 min=6054 max=9318 avg=6358.4 std=702 p5=6054 median=6150 p95=9318

INFO: Running benchmark for at least 50 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=6131 curr=6088 min=6012 max=6390 avg=6104.38 std=61 p5=6031 median=6092 p95=6244

INFO: [benchmark_litert_model.h:89] 
========== BENCHMARK RESULTS ==========
INFO: [benchmark_litert_model.h:91] Signature name:       serving_default
INFO: [benchmark_litert_model.h:94] Model initialization: 48.11 ms
INFO: [benchmark_litert_model.h:95] Warmup (first):       9.32 ms
INFO: [benchmark_litert_model.h:97] Warmup (avg):         6.36 ms (20 runs)
INFO: [benchmark_litert_model.h:99] Inference (avg):      6.10 ms (50 runs)
INFO: [benchmark_litert_model.h:103] Inference (min):      6.01 ms
INFO: [benchmark_litert_model.h:105] Inference (max):      6.39 ms
INFO: [benchmark_litert_model.h:107] Inference (std):      0.06
INFO: [benchmark_litert_model.h:115] Throughput:           98.45 MB/s
INFO: [benchmark_litert_model.h:124] 
Memory Usage:
INFO: [benchmark_litert_model.h:125] Init footprint:       9.02 MB
INFO: [benchmark_litert_model.h:127] Overall footprint:    12.55 MB
INFO: [benchmark_litert_model.h:134] Peak memory usage not available. (peak_mem_mb <= 0)
INFO: [benchmark_litert_model.h:138] ======================================

INFO: [benchmark_litert_model.h:192] 
===================================================================== Run Order ======================================================================
                                                 [node type]    [start]    [first]   [avg ms]        [%]     [cdf%]   [mem KB] [times called]   [Name]
                      Delegate/Convolution (NHWC, F32) IGEMM      0.000      3.912      2.500    49.020%    49.020%      0.000             70   [Delegate]:0
                     Delegate/Convolution (NHWC, F32) DWConv      3.950      1.874      1.200    23.529%    72.549%      0.000             70   [Delegate]:1
                     Delegate/Fully Connected (NC, F32) GEMM      5.870      0.912      0.700    27.451%   100.000%      0.000            140   [Delegate]:2

============================================================== Top by Computation Time ===============================================================
                                                 [node type]    [start]    [first]   [avg ms]        [%]     [cdf%]   [mem KB] [times called]   [Name]
                      Delegate/Convolution (NHWC, F32) IGEMM      0.000      3.912      2.500    49.020%    49.020%      0.000             70   [Delegate]:0
                     Delegate/Fully Connected (NC, F32) GEMM      5.870      0.912      0.700    27.451%    76.471%      0.000            140   [Delegate]:2
                     Delegate/Convolution (NHWC, F32) DWConv      3.950      1.874      1.200    23.529%   100.000%      0.000             70   [Delegate]:1

Number of nodes executed: 3

====================================================== Summary by node type ======================================================
                                                 [Node type]    [count]   [avg ms]    [avg %]    [cdf %]   [mem KB] [times called]
                      Delegate/Convolution (NHWC, F32) IGEMM          1      2.500    49.020%    49.020%      0.000             70
                     Delegate/Fully Connected (NC, F32) GEMM          1      0.700    27.451%    76.471%      0.000            140
                     Delegate/Convolution (NHWC, F32) DWConv          1      1.200    23.529%   100.000%      0.000             70

========================================================= Delegate Statistics =========================================================
Op Name                                                                               Count    Avg(us)    Min(us)    Max(us)  Total(us)
Delegate/Convolution (NHWC, F32) DWConv                                                  70    1200.00       1080       1874      84000
Delegate/Convolution (NHWC, F32) IGEMM                                                   70    2500.00       2250       3912     175000
Delegate/Fully Connected (NC, F32) GEMM                                                 140     700.00        630        912      98000

Timings (microseconds): count=3 curr=357000
Memory (bytes): count=0
3 nodes observed

"""

# The Android benchmark app reports through logcat: the 2019 headline with "Inference", no profile.
LOGCAT_2019 = "05-14 10:31:07.412  7321  7346 I tflite  : Average inference timings in us: Warmup: 91471, Init: 4108, Inference: 80660.1\n"


def model_of(path: Path) -> str:
    return path.name.rsplit("_run", 1)[0]


def no_stats_us(text: str) -> float:
    """The "no stats" figure of a 2018 headline, read independently of the parser."""
    return float(text.split("no stats:")[1].split()[0])


# --- the real 2018 Pixel 1 logs --------------------------------------------------------------------------------------


def test_all_nine_pixel1_logs_are_there():
    assert len(PIXEL1_LOGS) == 9, f"expected 9 logs in {PIXEL1}"


@pytest.mark.parametrize("path", PIXEL1_LOGS, ids=lambda p: p.stem)
def test_pixel1_log(path: Path):
    text = path.read_text()
    log = parse_log(text)
    assert log.inference_avg_us == no_stats_us(text)
    assert log.count == 200  # the timed runs, not the 100 warm-up runs nor the profiler's 300
    assert 0 < log.std_us < 0.1 * log.inference_avg_us
    assert log.warmup_avg_us == pytest.approx(log.inference_avg_us, rel=0.1)
    assert 20_000 < log.init_us < 40_000  # "Initialized session in 0.02...s"
    assert log.first_us >= log.warmup_avg_us  # the very first run is the slowest warm-up run here

    types = [op.type for op in log.ops]
    assert types.count("CONV_2D") == 15  # stem, 13 pointwise, the 1x1 classifier
    assert types.count("DEPTHWISE_CONV_2D") == 13
    assert types[:3] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D"]  # execution order
    assert "Conv2d_0/Relu6" in log.ops[0].name and "Conv2d_13_pointwise" in log.ops[26].name
    assert all(op.times_called == 1 and op.first_ms > 0 for op in log.ops)
    # The per-op averages add up to the end-to-end time (they come from slightly different sets of runs).
    assert sum(op.avg_ms for op in log.ops) * 1e3 == pytest.approx(log.inference_avg_us, rel=0.03)


def test_pixel1_first_log_values():
    log = parse_log((PIXEL1 / "0.5flops_run1.txt").read_text())
    assert (log.inference_avg_us, log.warmup_avg_us, log.init_us, log.first_us) == (68307, 68459.8, 26466, 74794)
    assert log.std_us == 758
    assert len(log.ops) == 30
    assert log.ops[0] == OpTiming("CONV_2D", "[pruned/MobilenetV1/MobilenetV1/Conv2d_0/Relu6]", 3.367, 5.228, 1)
    assert log.ops[-1] == OpTiming("RESHAPE", "[pruned/MobilenetV1/Logits/SpatialSqueeze]", 0.002, 0.003, 1)


@pytest.mark.parametrize("model, expected_ms", README_MEAN_MS.items())
def test_pixel1_mean_latency_matches_readme(model: str, expected_ms: float):
    runs = [parse_log(p.read_text()) for p in PIXEL1_LOGS if model_of(p) == model]
    assert len(runs) == 3
    assert statistics.mean(r.inference_avg_us for r in runs) / 1e3 == pytest.approx(expected_ms, rel=0.02)


# --- later layouts ---------------------------------------------------------------------------------------------------


def test_current_layout_with_xnnpack_delegate():
    log = parse_log(CURRENT_XNNPACK)
    assert log.inference_avg_us == 1.24027e6  # "Inference (avg): 1.24027e+06"
    assert log.warmup_avg_us == 1.3576e6
    assert (log.init_us, log.first_us) == (5579, 1357602)
    assert (log.count, log.std_us) == (50, 2565)  # the regular runs' line, not "Timings (microseconds): count=50"
    # Only the regular runs' Run Order table: no ModifyGraphWithDelegate / AllocateTensors, no Top-by duplicates.
    assert [op.type for op in log.ops] == ["TfLiteXNNPackDelegate", "TFLite_Detection_PostProcess"]
    assert log.ops[0].name == "[raw_outputs/box_encodings, raw_outputs/class_predictions]:110"
    assert log.ops[1].name.startswith("[TFLite_Detection_PostProcess, TFLite_Detection_PostProcess:1, ")
    assert (log.ops[0].first_ms, log.ops[0].avg_ms) == (1281.904, 1178.342)
    assert sum(op.ms_per_run for op in log.ops) * 1e3 == pytest.approx(log.inference_avg_us, rel=0.01)


def test_current_layout_with_xnnpack_operators():
    log = parse_log(CURRENT_XNNPACK_OPERATORS)
    assert (log.inference_avg_us, log.init_us, log.first_us, log.warmup_avg_us) == (7102.9, 24871, 9873, 7431.6)
    assert (log.count, log.std_us) == (141, 118)
    assert len(log.ops) == 7
    dwconv = log.ops[2]
    assert dwconv == OpTiming(
        "Convolution (NHWC, QC8) DWConv", "Delegate/Convolution (NHWC, QC8) DWConv:1", 0.183, 0.431, 13
    )
    assert log.ops[4].type == "Global Average Pooling (NWC, QS8)"
    assert dwconv.ms_per_run == pytest.approx(0.183 * 13)
    # avg ms is per call: only counting every call adds up to the end-to-end time.
    assert sum(op.ms_per_run for op in log.ops) * 1e3 == pytest.approx(log.inference_avg_us, rel=0.05)
    assert sum(op.avg_ms for op in log.ops) * 1e3 < 0.5 * log.inference_avg_us


def test_start_column_layout_skips_initialization_profile():
    log = parse_log(START_COLUMN)
    assert (log.inference_avg_us, log.init_us, log.first_us) == (258702, 17187, 275728)
    assert [(op.type, op.avg_ms, op.first_ms) for op in log.ops] == [
        ("CONV_2D", 60.957, 87.754),
        ("DEPTHWISE_CONV_2D", 49.870, 53.628),
        ("CONV_2D", 147.808, 134.346),
    ]
    assert log.ops[2].name == "[MobilenetV1/MobilenetV1/Conv2d_1_pointwise/Relu6]:2"


def test_2019_layout_pasted_with_spaces():
    log = parse_log(SPACES_2019)
    assert (log.inference_avg_us, log.warmup_avg_us, log.init_us) == (115062, 86184.3, 1892)
    assert log.first_us == 91810  # first= of the warm-up statistics, the headline has no "First inference"
    assert (log.count, log.std_us) == (50, 7678)
    assert log.ops == [
        OpTiming("CONV_2D", "[MobilenetV2/Conv/Relu6]", 7.237, 5.567, 1),
        OpTiming("DEPTHWISE_CONV_2D", "[MobilenetV2/expanded_conv/depthwise/Relu6]", 3.726, 3.518, 1),
    ]


def test_logcat_headline_without_profile():
    log = parse_log(LOGCAT_2019)
    assert log == BenchmarkLog(
        inference_avg_us=80660.1, init_us=4108, first_us=None, warmup_avg_us=91471, count=None, std_us=None, ops=[]
    )


def test_litert_tool_results_block_and_space_padded_profile():
    log = parse_log(LITERT_PROFILER)
    # the statistics and session lines, exact to the microsecond, rather than the block's 6.10 ms
    assert (log.inference_avg_us, log.warmup_avg_us, log.first_us, log.init_us) == (6104.38, 6358.4, 9318, 48112)
    assert (log.count, log.std_us) == (50, 61)
    assert [op.name for op in log.ops] == ["[Delegate]:0", "[Delegate]:1", "[Delegate]:2"]  # run order, once each
    assert log.ops[2] == OpTiming("Delegate/Fully Connected (NC, F32) GEMM", "[Delegate]:2", 0.7, 0.912, 2)
    assert [op.times_called for op in log.ops] == [1, 1, 2]  # 70, 70 and 140 calls over 70 runs
    assert sum(op.ms_per_run for op in log.ops) == pytest.approx(5.1)


def test_litert_tool_block_alone():
    """Without the statistics lines (a log cut to its end), the block's milliseconds are what is known."""
    start = LITERT_PROFILER.index("INFO: [benchmark_litert_model.h:89]")
    log = parse_log(LITERT_PROFILER[start:])
    assert (log.inference_avg_us, log.warmup_avg_us, log.first_us, log.init_us) == (6100, 6360, 9320, 48110)
    assert (log.count, log.std_us) == (None, None)
    assert [op.times_called for op in log.ops] == [None, None, None]  # calls over an unknown number of runs


def test_litert_tool_without_runs_is_an_error():
    text = LITERT_PROFILER.replace("Inference (avg):      6.10 ms", "Inference (avg):      nan ms")
    text = text.replace(
        "count=50 first=6131 curr=6088 min=6012 max=6390 avg=6104.38 std=61 p5=6031 median=6092 p95=6244", "count=0"
    )
    with pytest.raises(UnparsedOutput, match="no average inference time in the BENCHMARK RESULTS block"):
        parse_log(text)


# --- statistics lines ------------------------------------------------------------------------------------------------


def test_statistics_line():
    line = "count=50 first=3150 curr=2950 min=2900 max=3200 avg=2.95034e+06 std=100"
    assert parse_stats(line) == {
        "count": 50,
        "first": 3150,
        "curr": 2950,
        "min": 2900,
        "max": 3200,
        "avg": 2.95034e6,
        "std": 100,
    }
    assert parse_stats("INFO: count=1 curr=1357602 p5=1357602 median=1357602 p95=1357602")["median"] == 1357602
    assert parse_stats("native : benchmark_tflite_model.cc:440 count=100 first=74794")["count"] == 100


def test_statistics_of_the_regular_runs_follow_their_running_line():
    text = (
        "Running benchmark for at least 1 iterations and at least 0.5 seconds\ncount=1 curr=3512391\n\n"
        "Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.\n"
        "count=50 first=3150 curr=2950 min=2900 max=3200 avg=2.95034e+06 std=100\n\n"
        "Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06\n"
    )
    log = parse_log(text)
    assert (log.count, log.std_us, log.inference_avg_us) == (50, 100, 2.95034e6)


def test_all_same_statistics_mean_zero_spread():
    text = (
        "Running benchmark for at least 50 iterations\ncount=50 curr=1000(all same)\n"
        "Inference timings in us: Init: 10, First inference: 1000, Warmup (avg): 1000, Inference (avg): 1000\n"
    )
    log = parse_log(text)
    assert (log.count, log.std_us) == (50, 0)


# --- errors ----------------------------------------------------------------------------------------------------------


def test_unknown_format_shows_the_first_lines():
    text = "adb: error: failed to get feature set: no devices/emulators found\n\n" + "x" * 500 + "\nthird line\n"
    with pytest.raises(UnparsedOutput) as err:
        parse_log(text)
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "Inference timings in us" in message and "BENCHMARK RESULTS" in message
    assert "failed to get feature set: no devices/emulators found" in message and "third line" in message
    assert "x" * 100 + "..." in message and "x" * 101 not in message  # long lines are cut
    assert "\n" not in message  # one line, fit for a one-line CLI error


def test_empty_output_is_an_error():
    with pytest.raises(UnparsedOutput, match=r"\(empty\)"):
        parse_log("")


def test_missing_inference_average_is_an_error():
    with pytest.raises(UnparsedOutput, match="no average inference time"):
        parse_log(
            "Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): nan\n"
        )


def test_two_runs_in_one_log_are_an_error():
    with pytest.raises(UnparsedOutput, match="2 benchmark results"):
        parse_log(START_COLUMN + START_COLUMN)


def test_unknown_table_row_is_shown():
    text = CURRENT_XNNPACK_OPERATORS.replace(
        "\t              DEQUANTIZE\t    0.006", "\t              DEQUANTIZE\t    n/a"
    )
    with pytest.raises(UnparsedOutput, match=r"unknown row in the Run Order table: .*DEQUANTIZE.*n/a"):
        parse_log(text)


def test_csv_profile_is_not_taken_for_a_table():
    text = CURRENT_XNNPACK_OPERATORS.replace(
        "\t             [node type]\t  [first]", "node type, first, avg_ms, %, cdf%, mem KB, times called, name", 1
    )
    with pytest.raises(UnparsedOutput, match="unknown Run Order table header: 'node type, first"):
        parse_log(text)


def test_cut_table_is_an_error():
    cut = "\n".join(line for line in CURRENT_XNNPACK_OPERATORS.splitlines() if "GEMM:2" not in line)
    with pytest.raises(UnparsedOutput, match="lists 6 nodes but the profiler observed 7"):
        parse_log(cut)


# --- command line ----------------------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "android_bench.parse", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


def test_cli_json():
    path = PIXEL1 / "mobilenet_run1.txt"
    result = run_cli(str(path), "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["inference_avg_us"] == 123161 and out["init_us"] == 26762
    assert len(out["ops"]) == 31
    assert out["ops"][0]["type"] == "CONV_2D" and out["ops"][0]["avg_ms"] == 4.245
    assert out["ops"][0]["name"] == "[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]"


def test_cli_summary(tmp_path: Path):
    path = tmp_path / "xnnpack.txt"
    path.write_text(CURRENT_XNNPACK_OPERATORS)
    result = run_cli(str(path))
    assert result.returncode == 0, result.stderr
    assert "7.10 ms per inference" in result.stdout and "141 runs" in result.stdout
    assert "slowest: Convolution (NHWC, QC8) GEMM 3.913 ms" in result.stdout


@pytest.mark.parametrize("content", [None, "STARTING!\nFailed to load model\n"], ids=["missing", "not-a-log"])
def test_cli_bad_file(tmp_path: Path, content: str | None):
    path = tmp_path / "log.txt"
    if content is not None:
        path.write_text(content)
    result = run_cli(str(path), "--json")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    if content is not None:
        assert "'Failed to load model'" in result.stderr

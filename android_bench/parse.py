"""Parse the text output of TensorFlow Lite / LiteRT `benchmark_model` into a `BenchmarkLog`.

The tool has changed its layout several times since 2018; every layout below parses. Lines may carry a log prefix
(`native : benchmark_tflite_model.cc:590 `, `INFO: `, logcat's `I tflite  : `), so lines are searched, not matched
from their start. Numbers are printed by C++ `operator<<`: large values switch to scientific notation (`2.95034e+06`).

Two tools print this output: TFLite's benchmark_model (//tflite/tools/benchmark, the one published since 2018) and
LiteRT's CompiledModel benchmark_model (//litert/tools, the one LiteRT publishes per version). TFLite's headline, all
values in microseconds; `inference_avg_us` is the mean of the regular (timed) runs:

    2018   Average inference timings in us: Warmup: 68459.8, no stats: 68307
    2019   Average inference timings in us: Warmup: 86184.3, Init: 1892, no stats: 115062
           Average inference timings in us: Warmup: 91471, Init: 4108, Inference: 80660.1
    now    Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06,
           Inference (avg): 2.95034e+06   (one line)

The 2018 headline has no Init or First inference; they are the same quantities as "Initialized session in 0.026466s"
and the first warm-up run (`first=` of the warm-up statistics), so they are taken from there.

LiteRT's tool has no such headline but a block on stderr, in milliseconds rounded to 10 us:

    INFO: [benchmark_litert_model.h:89]
    ========== BENCHMARK RESULTS ==========
    INFO: [benchmark_litert_model.h:94] Model initialization: 48.11 ms
    INFO: [benchmark_litert_model.h:95] Warmup (first):       9.32 ms
    INFO: [benchmark_litert_model.h:97] Warmup (avg):         6.36 ms (20 runs)
    INFO: [benchmark_litert_model.h:99] Inference (avg):      6.10 ms (50 runs)

Both tools share the run statistics and "Initialized session in" lines below, which are exact to the microsecond, so
for LiteRT's tool the values come from those and the block only fills in what they lack.

Run statistics: each "Running benchmark for ..." line, first for the warm-up runs and last for the regular runs, is
followed by one statistics line

    count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798 [p5=... median=... p95=...]

which shrinks to `count=N curr=X` (one run, or `(all same)` appended when every run took the same time; std is then 0).
The `Timings (microseconds): count=...` line at the end of the op tables is the profiler's total over all profiled
runs, a different statistic, and is not used.

Op profiling (`--enable_op_profiling`) prints "Run Order", "Top by Computation Time" and "Summary by node type"
tables. Rows are tab-separated (spaces once pasted from a terminal), each field right-aligned, one row per node;
[first] and [avg ms] are per call, [times called] per run:

    until ~2022  [node type]  [start]  [first]  [avg ms]  [%]  [cdf%]  [mem KB]  [times called]  [Name]
    since        [node type]           [first]  [avg ms]  [%]  [cdf%]  [mem KB]  [times called]  [Name]

Since 2019 the tool prints the tables twice: under "Profiling Info for Benchmark Initialization:" (graph preparation,
ModifyGraphWithDelegate, AllocateTensors) and under "Operator-wise Profiling Info for Regular Benchmark Runs:"; the
2018 tool prints only the latter, without the banner. Node types are builtin ops (CONV_2D), delegate kernels
(TfLiteXNNPackDelegate, TfLiteNnapiDelegate) or, with XNNPACK's own profiler, its operators
("Convolution (NHWC, F32) IGEMM"), so types as well as names may hold spaces and commas. Names are kept verbatim
("[MobilenetV1/Conv2d_0/Relu6]:0", "[add_fold, aspp0/Relu]:71", "Delegate/Convolution (NHWC, F32) IGEMM:0").

LiteRT's tool (`--use_profiler=true`, since 2.2) prints one set of tables after its results block, padded with spaces
(printf `%60s %10.3f ...`), with the [start] column, types such as "Delegate/Convolution (NHWC, F32) IGEMM" and names
"[Builtin]:N" or "[Delegate]:N". Its [times called] counts the calls of every run since start-up, warm-up included;
it is turned into calls per run with the run counts of the statistics lines (None when they do not divide it).

Anything else raises `UnparsedOutput` naming the lines it could not read, rather than returning made-up zeros.

    python -m android_bench.parse LOG [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"

_HEADLINE = re.compile(r"inference timings in us:(.*)", re.IGNORECASE)
_HEADLINE_FIELD = re.compile(rf"([A-Za-z][A-Za-z ()]*?)\s*:\s*({NUMBER})")
# Headline labels of every version -> BenchmarkLog field ("no stats" and "Inference" are the regular runs' mean).
_HEADLINE_KEYS = {
    "init": "init_us",
    "first inference": "first_us",
    "warmup": "warmup_avg_us",
    "warmup (avg)": "warmup_avg_us",
    "inference": "inference_avg_us",
    "inference (avg)": "inference_avg_us",
    "no stats": "inference_avg_us",
}
_RESULTS_BANNER = "========== BENCHMARK RESULTS =========="
_RESULTS_FIELD = re.compile(
    rf"(Model initialization|Warmup \(first\)|Warmup \(avg\)|Inference \(avg\)):\s*({NUMBER}) ms"
)
_RESULTS_KEYS = {
    "Model initialization": "init_us",
    "Warmup (first)": "first_us",
    "Warmup (avg)": "warmup_avg_us",
    "Inference (avg)": "inference_avg_us",
}
_SESSION_INIT = re.compile(rf"Initialized session in\s*({NUMBER})\s*(ms|s)\b")
_RUN_START = "Running benchmark for"
_STAT_FIELD = re.compile(rf"\b([a-z0-9]+)=({NUMBER})")

_INIT_BANNER = "Profiling Info for Benchmark Initialization"
_REGULAR_BANNER = "Operator-wise Profiling Info for Regular Benchmark Runs"
_RUN_ORDER = re.compile(r"=+ Run Order =+")
_TABLE_TITLE = re.compile(r"=+ .* =+")
_NODES_OBSERVED = re.compile(r"(\d+) nodes observed")


def _row_pattern(with_start: bool) -> re.Pattern[str]:
    # The node type is the last tab-free run of text before the numeric columns, which skips a log prefix ahead
    # of the row's leading tab and still allows spaces and commas inside the type ("Add (ND, QS8)").
    start = rf"{NUMBER}\s+" if with_start else ""
    return re.compile(
        rf"(?:^|\t)\s*(?P<type>[^\t]*?\S)\s+{start}(?P<first>{NUMBER})\s+(?P<avg>{NUMBER})\s+{NUMBER}%\s+"
        rf"{NUMBER}%\s+{NUMBER}\s+(?P<times>\d+)\s+(?P<name>\S.*?)\s*$"
    )


_ROW = {with_start: _row_pattern(with_start) for with_start in (False, True)}


class UnparsedOutput(ValueError):
    """The text is not benchmark_model output this parser knows; the message quotes the lines it could not read."""


@dataclass(frozen=True)
class OpTiming:
    """One node of the regular runs' Run Order table. `avg_ms` and `first_ms` are per call, as the tool prints them;
    a node called several times per run (XNNPACK operators, loops) costs `ms_per_run`. `times_called` is per run,
    None when the log does not tell."""

    type: str
    name: str
    avg_ms: float
    first_ms: float | None
    times_called: int | None

    @property
    def ms_per_run(self) -> float:
        return self.avg_ms * (self.times_called or 1)


@dataclass(frozen=True)
class BenchmarkLog:
    """The timings of one benchmark_model run, in microseconds; `count` and `std_us` describe the regular runs."""

    inference_avg_us: float
    init_us: float | None
    first_us: float | None
    warmup_avg_us: float | None
    count: int | None
    std_us: float | None
    ops: list[OpTiming]


def _excerpt(lines: list[str], limit: int = 4, width: int = 100) -> str:
    """The first few non-blank lines, shortened and quoted (so tabs show), on one line for a one-line error."""
    shown = [line.strip() for line in lines if line.strip()][:limit]
    return " | ".join(repr(line if len(line) <= width else line[:width] + "...") for line in shown) or "(empty)"


def parse_stats(line: str) -> dict[str, float]:
    """The `key=value` pairs of a statistics line (`count=50 first=... avg=2.95034e+06 std=...`)."""
    return {key: float(value) for key, value in _STAT_FIELD.findall(line)}


def _headline(lines: list[str]) -> dict[str, float] | None:
    """TFLite's tool: the values of its one 'inference timings in us' line; None when there is none."""
    found = [(line, match.group(1)) for line in lines if (match := _HEADLINE.search(line))]
    if not found:
        return None
    if len(found) > 1:
        # Several runs in one file: averaging or picking one would hide which result the caller gets.
        raise UnparsedOutput(
            f"{len(found)} benchmark results in one log, parse one run at a time: "
            f"{_excerpt([line for line, _ in found])}"
        )
    line, rest = found[0]
    values = {
        _HEADLINE_KEYS[label.lower()]: float(value)
        for label, value in _HEADLINE_FIELD.findall(rest)
        if label.lower() in _HEADLINE_KEYS
    }
    if "inference_avg_us" not in values:  # e.g. "Inference (avg): nan" when no regular run finished
        raise UnparsedOutput(f"no average inference time in the timings line: {_excerpt([line])}")
    return values


def _results_block(lines: list[str]) -> dict[str, float] | None:
    """LiteRT's tool: the values of its one BENCHMARK RESULTS block, in microseconds; None when there is none."""
    starts = [i for i, line in enumerate(lines) if _RESULTS_BANNER in line]
    if not starts:
        return None
    if len(starts) > 1:
        raise UnparsedOutput(
            f"{len(starts)} benchmark results in one log, parse one run at a time: "
            f"{_excerpt([lines[i] for i in starts])}"
        )
    values = {}
    for line in lines[starts[0] + 1 :]:
        if "=====" in line:  # the block's closing rule
            break
        if match := _RESULTS_FIELD.search(line):
            values[_RESULTS_KEYS[match.group(1)]] = round(float(match.group(2)) * 1e3, 3)
    if "inference_avg_us" not in values:  # "Inference (avg): nan ms" when no regular run finished
        raise UnparsedOutput(
            f"no average inference time in the BENCHMARK RESULTS block: {_excerpt(lines[starts[0] : starts[0] + 6])}"
        )
    return values


def _litert_values(lines: list[str], warmup: dict[str, float], regular: dict[str, float]) -> dict[str, float]:
    """LiteRT's results block, with what the statistics and session lines give to the microsecond put in its place."""
    block = _results_block(lines)
    if block is None:
        raise UnparsedOutput(
            f"not benchmark_model output (no 'Inference timings in us' line or BENCHMARK RESULTS "
            f"block); first lines: {_excerpt(lines)}"
        )
    exact = {
        "init_us": _session_init_us(lines),
        "first_us": warmup.get("first", warmup.get("curr")),
        "warmup_avg_us": _mean_us(warmup),
        "inference_avg_us": _mean_us(regular),
    }
    return {**block, **{key: value for key, value in exact.items() if value is not None}}


def _session_init_us(lines: list[str]) -> float | None:
    for line in lines:
        if match := _SESSION_INIT.search(line):
            # Rounded to the nanosecond so "0.026466s" reads as 26466 us, not 26466.000000000004.
            return round(float(match.group(1)) * (1e3 if match.group(2) == "ms" else 1e6), 3)
    return None


def _run_stats(lines: list[str]) -> list[dict[str, float]]:
    """The statistics line after each "Running benchmark for" line, in order: warm-up runs first, regular runs last."""
    blocks: list[dict[str, float]] = []
    waiting = False
    for line in lines:
        if _RUN_START in line:
            waiting = True
        elif waiting and "count=" in line:
            blocks.append(parse_stats(line))
            waiting = False
    return blocks


def _mean_us(stats: dict[str, float]) -> float | None:
    # `count=N curr=X(all same)` has no avg: every run took X.
    return stats.get("avg", stats.get("curr")) if stats.get("count") else None


def _std_us(stats: dict[str, float]) -> float | None:
    if not stats.get("count"):
        return None
    # The tool leaves std out of `count=N curr=X(all same)`, where every run took the same time.
    return stats.get("std", 0.0)


def _run_order_titles(lines: list[str]) -> list[int]:
    """Indexes of the Run Order titles of the regular runs, skipping the tables of the initialization profile."""
    titles, in_init = [], False
    for i, line in enumerate(lines):
        if _INIT_BANNER in line:
            in_init = True
        elif _REGULAR_BANNER in line:
            in_init = False
        elif _RUN_ORDER.search(line) and not in_init:
            titles.append(i)
    return titles


def _parse_row(line: str, with_start: bool) -> OpTiming | None:
    match = _ROW[with_start].search(line)
    if match is None:
        return None
    return OpTiming(
        type=match["type"].strip(),
        name=match["name"],
        avg_ms=float(match["avg"]),
        first_ms=float(match["first"]),
        times_called=int(match["times"]),
    )


def _table_rows(lines: list[str], header_at: int) -> tuple[list[str], int]:
    """The rows under a table header (up to the blank line or next table title) and the index after them."""
    end = header_at + 1
    while end < len(lines) and lines[end].strip() and not _TABLE_TITLE.search(lines[end]):
        end += 1
    return lines[header_at + 1 : end], end


def _ops(lines: list[str], runs_since_start: int | None) -> list[OpTiming]:
    """The regular runs' Run Order rows. `runs_since_start` (LiteRT's tool: warm-up and regular runs) is what the
    space-padded LiteRT table's [times called] counts over."""
    titles = _run_order_titles(lines)
    if not titles:
        return []  # run without --enable_op_profiling
    if len(titles) > 1:
        raise UnparsedOutput(
            f"{len(titles)} Run Order tables for the regular runs: {_excerpt([lines[i] for i in titles])}"
        )
    header_at = titles[0] + 1
    header = lines[header_at] if header_at < len(lines) else ""
    if "[node type]" not in header:  # e.g. the CSV profiling output mode
        raise UnparsedOutput(f"unknown Run Order table header: {_excerpt(lines[header_at : header_at + 2])}")
    with_start = "[start]" in header
    rows, end = _table_rows(lines, header_at)
    ops = []
    for i, row in enumerate(rows):
        op = _parse_row(row, with_start)
        if op is None:
            raise UnparsedOutput(f"unknown row in the Run Order table: {_excerpt(rows[i : i + 3])}")
        ops.append(op)
    _check_complete(ops, lines[end:])
    if runs_since_start is not None and "\t" not in header:
        return [_calls_per_run(op, runs_since_start) for op in ops]
    return ops


def _calls_per_run(op: OpTiming, runs: int) -> OpTiming:
    calls = op.times_called or 0
    return replace(op, times_called=calls // runs if runs and calls % runs == 0 else None)


def _check_complete(ops: list[OpTiming], after: list[str]) -> None:
    """Logcat drops lines of long messages; the profiler's own node count tells a cut table from a whole one."""
    for line in after:
        if match := _NODES_OBSERVED.search(line):
            if int(match.group(1)) != len(ops):
                raise UnparsedOutput(
                    f"the Run Order table lists {len(ops)} nodes but the profiler observed "
                    f"{match.group(1)}: the log is cut short ({_excerpt([line])})"
                )
            return


def parse_log(text: str) -> BenchmarkLog:
    """Parse the complete output of one benchmark_model run (TFLite's tool of any version since 2018, LiteRT's
    CompiledModel tool)."""
    lines = text.splitlines()
    runs = _run_stats(lines)
    regular = runs[-1] if runs else {}
    warmup = runs[0] if len(runs) > 1 else {}
    headline = _headline(lines)
    litert = headline is None
    if litert:
        headline = _litert_values(lines, warmup, regular)
    return BenchmarkLog(
        inference_avg_us=headline["inference_avg_us"],
        init_us=headline.get("init_us", _session_init_us(lines)),
        # `count=1 curr=X` (a single warm-up run) has no first=; that run is the first inference.
        first_us=headline.get("first_us", warmup.get("first", warmup.get("curr"))),
        warmup_avg_us=headline.get("warmup_avg_us"),
        count=int(regular["count"]) if "count" in regular else None,
        std_us=_std_us(regular),
        ops=_ops(lines, int(sum(stats.get("count", 0) for stats in runs)) if litert else None),
    )


# --- command line ----------------------------------------------------------------------------------------------------


def _summary(log: BenchmarkLog, source: str) -> str:
    def ms(us: float | None) -> str:
        return "-" if us is None else f"{us / 1e3:.2f} ms"

    lines = [
        f"{source}: {ms(log.inference_avg_us)} per inference (init {ms(log.init_us)}, first {ms(log.first_us)}, "
        f"warm-up avg {ms(log.warmup_avg_us)}, {log.count if log.count is not None else '?'} runs, std "
        f"{ms(log.std_us)})"
    ]
    if log.ops:
        slowest = sorted(log.ops, key=lambda op: op.ms_per_run, reverse=True)[:5]
        lines.append(
            f"{len(log.ops)} ops; slowest: " + ", ".join(f"{op.type} {op.ms_per_run:.3f} ms" for op in slowest)
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m android_bench.parse", description="Parse benchmark_model output.")
    parser.add_argument("log", help="text file holding the output of one benchmark_model run")
    parser.add_argument("--json", action="store_true", help="print the parsed log as one JSON object on the last line")
    args = parser.parse_args(argv)
    try:
        # Device logs may hold stray non-UTF-8 bytes; they never sit inside the numbers this parser reads.
        log = parse_log(Path(args.log).read_text(encoding="utf-8", errors="replace"))
    except OSError as exc:
        print(f"error: cannot read {args.log}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except UnparsedOutput as exc:
        print(f"error: {args.log}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(log)) if args.json else _summary(log, args.log))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Import per-op profiles of whole-model runs on a phone (`benchmark_model --enable_op_profiling=true`) into a
latency table, so that measured runs, cache effects between ops included, feed the same tables as the profiler.

A model config names, in execution order, the op signature of every node the log's run-order table lists:

    {"name": "mobilenet_v1_0.75", "ops": ["CONV_2D 224x224 3->24 k3 s2 SAME RELU6", "DEPTHWISE_CONV_2D ...", ...]}

`mobilenet_v1_config` writes it for MobileNetV1 variants. Each logged op's time per run becomes the entry of its
signature (median over the logs of that model, with p10/p90), and the model's end-to-end mean next to the sum of
its ops becomes a calibration point of the target.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from android_bench.parse import BenchmarkLog, UnparsedOutput, parse_log

from .. import ops
from ..errors import ToolchainError
from ..graph import ModelGraph
from ..lowering import ChannelRef, GraphOp
from ..schemas import ModelConfigFile, parse
from .runners import Target, Timing
from .signature import OpSignature
from .table import LatencyTable, ModelCalibration, default_table_path


def load_model_config(path: str | Path) -> tuple[str, list[OpSignature]]:
    path = Path(path)
    fix = "it needs \"ops\": a list of op signatures like 'CONV_2D 224x224 3->32 k3 s2 SAME RELU6', one per logged node"
    if not path.is_file():
        raise ToolchainError(
            f"model config {path} {'is a folder' if path.is_dir() else 'does not exist'}: pass a "
            "JSON file listing the logged ops' signatures"
        )
    try:
        blob = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ToolchainError(f"model config {path} is not JSON ({type(e).__name__}): {fix}") from None
    record = parse(ModelConfigFile, blob, f"model config {path}", fix)
    try:
        return record.name or path.stem, [OpSignature.from_key(k) for k in record.ops]
    except ValueError as e:
        raise ToolchainError(f"model config {path}: {e}: {fix}") from None


def read_logs(paths: Sequence[str | Path]) -> list[BenchmarkLog]:
    logs = []
    for path in paths:
        if Path(path).is_dir():
            raise ToolchainError(f"benchmark log {path} is a folder: pass the log files themselves")
        try:
            logs.append(parse_log(Path(path).read_text(errors="replace")))
        except FileNotFoundError:
            raise ToolchainError(f"benchmark log {path} does not exist") from None
        except UnparsedOutput as e:
            raise ToolchainError(f"benchmark log {path}: {e}") from None
    return logs


def config_graph(signatures: Sequence[OpSignature]) -> ModelGraph:
    """A graph with every channel count fixed: what the predictor needs to price a logged model as a whole."""
    graph_ops = tuple(
        GraphOp(
            s.kind,
            f"op{i}",
            s.h,
            s.w,
            (ChannelRef(None, s.c_in),),
            (ChannelRef(None, s.c_out),),
            s.kernel,
            s.stride,
            s.padding,
            s.act,
        )
        for i, s in enumerate(signatures)
    )
    return ModelGraph((), signatures[0].h if signatures else 0, {"tflite": graph_ops})


def config_key(signatures: Sequence[OpSignature]) -> str:
    return "config-" + hashlib.sha1("|".join(s.key() for s in signatures).encode()).hexdigest()[:12]


def import_logs(
    table: LatencyTable, signatures: Sequence[OpSignature], logs: Sequence[BenchmarkLog], source: str = "log"
) -> int:
    """Add the logged ops of one model to `table`; returns how many entries were added or updated."""
    for n, log in enumerate(logs):
        if len(log.ops) != len(signatures):
            raise ToolchainError(
                f"{source} run {n + 1} profiles {len(log.ops)} ops but the model config lists {len(signatures)}: "
                "the config must name every node of the run-order table, in order"
            )
        for i, (op, sig) in enumerate(zip(log.ops, signatures)):
            if op.type != ops.kind(sig.kind).builtin:
                raise ToolchainError(
                    f"{source} run {n + 1}, node {i} ({op.name}) is {op.type} but the model config says "
                    f"{sig.kind}: fix the config's op order"
                )
    per_op = np.array([[op.ms_per_run for op in log.ops] for log in logs])  # (runs, ops)
    for i, sig in enumerate(signatures):
        samples = per_op[:, i]
        table.add(
            sig,
            Timing(
                float(np.median(samples)),
                float(np.percentile(samples, 10)),
                float(np.percentile(samples, 90)),
                len(samples),
            ),
        )
    measured = float(np.median([log.inference_avg_us for log in logs])) / 1e3
    table.add_model(config_key(signatures), ModelCalibration((float(np.median(per_op.sum(1))),), (measured,)))
    return len(signatures)


def mobilenet_v1_config(
    stem: int,
    blocks: Sequence[tuple[int, int]],
    tail: Sequence[str] = ("RESHAPE",),
    classes: int = 1001,
    size: int = 224,
) -> list[OpSignature]:
    """Op signatures of a TensorFlow MobileNetV1 as its 2018 `.tflite` runs it: `blocks` are (out channels,
    stride) of the 13 depthwise-separable blocks; SAME padding throughout, BN and ReLU6 fused; `tail` names the
    shape-only ops after the logits (RESHAPE, or SQUEEZE and SOFTMAX, depending on how the graph was frozen)."""
    h = -(-size // 2)
    ops = [OpSignature("CONV_2D", size, size, 3, stem, 3, 2, "SAME", "RELU6")]
    c = stem
    for out, stride in blocks:
        ops.append(OpSignature("DEPTHWISE_CONV_2D", h, h, c, c, 3, stride, "SAME", "RELU6"))
        h = -(-h // stride)
        ops.append(OpSignature("CONV_2D", h, h, c, out, 1, 1, "SAME", "RELU6"))
        c = out
    ops += [
        OpSignature("AVERAGE_POOL_2D", h, h, c, c, h, 2, "VALID", "NONE"),
        OpSignature("CONV_2D", 1, 1, c, classes, 1, 1, "SAME", "NONE"),
    ]
    return ops + [OpSignature(kind, 1, 1, classes, classes) for kind in tail]


@dataclass(frozen=True)
class ImportOutcome:
    table: Path
    imported: int  # op entries added or updated
    logs: int
    entries: int  # in the table afterwards
    target: Target
    model: str


def import_log_files(
    device: str,
    logs: Sequence[str | Path],
    model_config: str | Path,
    table: Path | None = None,
    threads: int = 1,
    runtime_version: str = "unknown",
    delegate: str = "none",
) -> ImportOutcome:
    """`toolchain import-logs`: per-op profiles of one model's runs on a phone into that phone's table."""
    if device.startswith("host"):
        raise ToolchainError("logs are imported for phones: pass the phone's device name, e.g. --device pixel1")
    target = Target(device, "benchmark_model", runtime_version, "fp32", threads, delegate, device)
    name, signatures = load_model_config(model_config)
    parsed = read_logs(logs)
    path = table or default_table_path(target)
    latency_table = LatencyTable.open(path, target)
    added = import_logs(latency_table, signatures, parsed, name)
    latency_table.save()
    return ImportOutcome(path, added, len(parsed), len(latency_table), target, name)

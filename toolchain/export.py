"""Exporters: PyTorch -> `.tflite` (fp32, fp16 weights, full-integer int8; NHWC input, as Android camera
pipelines deliver it) and ONNX, each verified against PyTorch on real images before it is written.

Quantization uses ai-edge-quantizer on the fp32 `.tflite`: fp16 casts the weights (half the size, float
compute); int8 is its static recipe (int8 weights and activations, int8 input and output) calibrated with plain
min/max over training images. The PT2E path inside litert-torch also produces int8, but it leaves most residual
ADDs in float between DEQUANTIZE/QUANTIZE pairs, which costs speed on phones.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .console import quiet_native
from .data import ImageSet, inference_images_per_pass, load_split, normalize
from .errors import ToolchainError
from .files import atomic_path, write_atomic
from .models import ModelSource, ModelSpec, load

PRECISIONS = ("fp32", "fp16", "int8")
# torch.export keeps global state: conversions from several threads (one per phone while profiling) take turns.
_CONVERTER = threading.Lock()
METADATA_NAME = "toolchain.app_info"  # the .tflite metadata entry holding the app info as JSON


@dataclass(frozen=True)
class Parity:
    images: int
    max_abs_diff: float
    logit_range: float
    top1_agreement: float
    top1_exported: float
    top1_pytorch: float


@dataclass(frozen=True)
class ExportResult:
    path: str
    format: str
    precision: str
    size_bytes: int
    parity: Parity
    sidecar: str
    labels: str

    @classmethod
    def from_dict(cls, d: dict) -> ExportResult:
        return cls(**{**d, "parity": Parity(**d["parity"])})


class ParityError(ToolchainError):
    """The exported file does not compute what the PyTorch model computes."""


def to_tflite(model: nn.Module, input_size: int, in_channels: int = 3) -> bytes:
    """Convert to an fp32 `.tflite` with a (1, H, W, C) NHWC input; BN is folded and ReLU/ReLU6 fused."""
    with quiet_native():  # importing the converter logs from C++ too
        import litert_torch

    model = model.eval()
    wrapped = litert_torch.to_channel_last_io(model, args=[0]).eval()
    sample = (torch.zeros(1, input_size, input_size, in_channels),)
    try:
        with _CONVERTER, quiet_native():
            converted = litert_torch.convert(wrapped, sample)
            content = bytes(converted.model_content())
    except Exception as e:
        reason = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
        culprit = unconvertible_module(model, input_size, in_channels)
        where = f"module {culprit} of {type(model).__name__}" if culprit else type(model).__name__
        raise ToolchainError(
            f"the TFLite converter cannot convert {where} ({reason}): rewrite it with supported ops, "
            "or export --format onnx"
        ) from None
    return content


def unconvertible_module(model: nn.Module, input_size: int, in_channels: int = 3) -> str | None:
    """The first leaf module, in execution order, that the converter refuses on its own ("odd (Weird)"), found by
    converting each distinct leaf with the inputs it saw in a dry run. Only runs after a conversion failed."""
    import litert_torch

    calls: list[tuple[str, nn.Module, tuple]] = []
    hooks = [
        m.register_forward_hook(lambda module, args, _, name=name: calls.append((name, module, args)))
        for name, m in model.named_modules()
        if name and not any(True for _ in m.children())
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, input_size, input_size))
    except Exception:
        return None  # the model does not even run in PyTorch; the converter's own message has to do
    finally:
        for hook in hooks:
            hook.remove()
    tried = set()
    for name, module, args in calls:
        key = (repr(module), tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor)))
        if key in tried:
            continue
        tried.add(key)
        try:
            with _CONVERTER, quiet_native():
                litert_torch.convert(module.eval(), args)
        except Exception:
            return f"{name} ({type(module).__name__})"
    return None


def to_onnx(model: nn.Module, input_size: int) -> bytes:
    """Export to a single-file ONNX model (opset 20, NCHW input) with torch.onnx's default exporter."""
    buffer = io.BytesIO()
    try:
        with quiet_native():
            torch.onnx.export(model.eval(), (torch.zeros(1, 3, input_size, input_size),), buffer, external_data=False)
    except Exception as e:
        raise ToolchainError(
            f"ONNX export failed on {type(model).__name__} ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    return buffer.getvalue()


def to_model_file(
    model: nn.Module, input_size: int, model_format: str, precision: str = "fp32", calibration: np.ndarray | None = None
) -> bytes:
    """The model in the format a runner times ("tflite" or "onnx") at `precision`; int8 calibrates its activation
    ranges on `calibration`, model inputs as `calibration_inputs` makes them."""
    check_format(model_format, precision)
    if model_format == "onnx":
        return to_onnx(model, input_size)
    blob = to_tflite(model, input_size)
    if precision == "fp16":
        return quantize_fp16(blob)
    if precision == "int8":
        if calibration is None or len(calibration) == 0:
            raise ToolchainError("int8 export needs calibration images: pass --data with a train split")
        return quantize_int8(blob, calibration)
    return blob


def latency_file(model: nn.Module, input_size: int, model_format: str, precision: str = "fp32") -> bytes:
    """The model as a target runs it, for timing only: its format and precision. An int8 model's ranges come from
    random inputs here: they change what it computes, not how fast."""
    calibration = None
    if precision == "int8":
        calibration = np.random.default_rng(0).standard_normal((8, input_size, input_size, 3)).astype(np.float32)
    return to_model_file(model, input_size, model_format, precision, calibration)


def calibration_inputs(images: ImageSet, spec: ModelSpec) -> np.ndarray:
    """Normalised NHWC float32 inputs, as the exported .tflite takes them."""
    return normalize(images.materialize()[0], spec.mean, spec.std).permute(0, 2, 3, 1).numpy()


def quantize_fp16(fp32: bytes) -> bytes:
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    q = quantizer.Quantizer(bytearray(fp32))
    q.add_weight_only_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        num_bits=16,
        algorithm_key=AlgorithmName.FLOAT_CASTING,
    )
    with quiet_native():
        return bytes(q.quantize().quantized_model)


def quantize_int8(fp32: bytes, calibration: np.ndarray) -> bytes:
    """Static int8 with min/max calibration on `calibration` (N, H, W, 3) float32 NHWC inputs."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    signatures = Interpreter(model_content=fp32).get_signature_list()
    key = next(iter(signatures))
    name = signatures[key]["inputs"][0]
    q = quantizer.Quantizer(bytearray(fp32), recipe.static_wi8_ai8())
    with quiet_native():
        result = q.calibrate({key: [{name: calibration[i : i + 1]} for i in range(len(calibration))]})
        return bytes(q.quantize(result).quantized_model)


def tflite_logits(model: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """A function running a `.tflite` image by image on float NHWC inputs, quantizing and dequantizing where its
    I/O is integer; the interpreter is built once."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet_native():  # the XNNPACK delegate announces itself on stderr when it is applied
        interpreter = Interpreter(model_content=model)
        interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]

    def run(nhwc: np.ndarray) -> np.ndarray:
        logits = []
        for x in nhwc:
            x = x[None]
            if inp["dtype"] != np.float32:
                info = np.iinfo(inp["dtype"])
                x = np.clip(np.round(x / in_scale + in_zero), info.min, info.max).astype(inp["dtype"])
            interpreter.set_tensor(inp["index"], x)
            interpreter.invoke()
            y = interpreter.get_tensor(out["index"])[0]
            logits.append((y.astype(np.float32) - out_zero) * out_scale if out["dtype"] != np.float32 else y)
        return np.stack(logits)

    return run


def onnx_logits(model: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """A function running an ONNX model image by image on NCHW inputs; the session is built once."""
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda nchw: np.concatenate([session.run(None, {name: x[None]})[0] for x in nchw])


def check_parity(exported: np.ndarray, reference: np.ndarray, labels: np.ndarray, precision: str) -> Parity:
    """Compare logits; raise `ParityError` with the figures when the file misses its precision's bar:
    fp32 max |diff| <= 1e-4 of the logit range; fp16 top-1 agreement >= 99.5%; int8 agreement >= 98% and
    top-1 at most 1 point below PyTorch's."""
    parity = Parity(
        len(labels),
        float(np.abs(exported - reference).max()),
        float(reference.max() - reference.min()),
        float((exported.argmax(1) == reference.argmax(1)).mean()),
        float((exported.argmax(1) == labels).mean()),
        float((reference.argmax(1) == labels).mean()),
    )
    figures = (
        f"max |logit diff| {parity.max_abs_diff:.3g} (range {parity.logit_range:.3g}), top-1 agreement "
        f"{100 * parity.top1_agreement:.2f}%, top-1 {100 * parity.top1_exported:.2f}% vs "
        f"{100 * parity.top1_pytorch:.2f}% in PyTorch"
    )
    failed = {
        "fp32": parity.max_abs_diff > 1e-4 * parity.logit_range,
        "fp16": parity.top1_agreement < 0.995,
        "int8": parity.top1_agreement < 0.98 or parity.top1_pytorch - parity.top1_exported > 0.01,
    }[precision]
    if failed:
        raise ParityError(f"the exported {precision} model fails its parity check on {parity.images} images: {figures}")
    return parity


def export(
    model: nn.Module,
    spec: ModelSpec,
    out: Path,
    model_format: str,
    precision: str,
    check: ImageSet,
    calibration: ImageSet | None = None,
) -> ExportResult:
    """Write `out` (plus `<out>.json` and a labels file beside it) after checking it against PyTorch on `check`."""
    check_format(model_format, precision)
    if out.suffix != f".{model_format}":  # the sidecar is <out>.json: a wrong suffix could even overwrite it
        raise ToolchainError(
            f"--out {out.name} does not end in .{model_format}: name the file for its format, e.g. model.{model_format}"
        )
    blob = to_model_file(
        model,
        spec.input_size,
        model_format,
        precision,
        calibration_inputs(calibration, spec) if calibration is not None else None,
    )
    info = app_info(out, spec, model_format, precision, blob)
    if model_format == "tflite":
        blob = with_metadata(blob, info)  # before the parity check, so the file checked is the file written
    file_logits = onnx_logits(blob) if model_format == "onnx" else tflite_logits(blob)
    reference, logits, truth = [], [], []
    model.eval()
    for images, y in check.batches(inference_images_per_pass(spec.input_size)):  # memory stays flat
        x = normalize(images, spec.mean, spec.std)  # (B, 3, H, W)
        with torch.no_grad():
            reference.append(model(x).numpy())
        logits.append(file_logits(x.numpy() if model_format == "onnx" else x.permute(0, 2, 3, 1).numpy()))
        truth.append(y.numpy())
    parity = check_parity(np.concatenate(logits), np.concatenate(reference), np.concatenate(truth), precision)
    _write(out, blob)
    labels = out.with_name(info["output"]["labels"])
    write_atomic(labels, "\n".join(spec.classes) + "\n")
    sidecar = out.with_name(out.stem + ".json")
    write_atomic(
        sidecar, json.dumps({**info, "pruning_policy": spec.policy, "parity": asdict(parity)}, indent=1) + "\n"
    )
    return ExportResult(str(out), model_format, precision, len(blob), parity, str(sidecar), str(labels))


def export_model(
    source: ModelSource,
    data: str,
    out: Path,
    model_format: str = "tflite",
    precision: str = "fp32",
    check_images: int = 500,
    calibration_images: int = 500,
) -> ExportResult:
    """`toolchain export`: a MODEL as a `.tflite` or `.onnx` file, checked on `check_images` test images of DATA
    (int8 calibrated on `calibration_images` train images)."""
    check_format(model_format, precision)
    loaded = load(source)
    check = load_split(data, "test", loaded.spec.input_size, check_images)
    spec = loaded.spec.match_classes(check.classes, source.ref)
    calibration = load_split(data, "train", spec.input_size, calibration_images) if precision == "int8" else None
    return export(loaded.model, spec, out, model_format, precision, check, calibration)


def check_format(model_format: str, precision: str) -> None:
    if model_format not in ("tflite", "onnx") or precision not in PRECISIONS:
        raise ToolchainError(
            f"unknown format {model_format!r} or precision {precision!r}: use tflite or onnx, and "
            f"{', '.join(PRECISIONS)}"
        )
    if model_format == "onnx" and precision != "fp32":
        raise ToolchainError(f"ONNX export is fp32 only: drop --precision {precision}, or use --format tflite")


def _write(path: Path, blob: bytes) -> None:
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(blob)
    except OSError as e:
        raise ToolchainError(f"cannot write {path} ({e.strerror}): choose a writable --out path") from None


def app_info(out: Path, spec: ModelSpec, model_format: str, precision: str, blob: bytes) -> dict:
    """What an app needs to feed the model: input layout and normalisation, output meaning, class labels."""
    size = spec.input_size
    layout = "NHWC" if model_format == "tflite" else "NCHW"
    info = {
        "model": out.name,
        "format": model_format,
        "precision": precision,
        "architecture": spec.arch,
        "input": {
            "shape": [1, size, size, 3] if layout == "NHWC" else [1, 3, size, size],
            "layout": layout,
            "color": "RGB",
            "dtype": "float32",
            "normalization": {
                "mean": list(spec.mean),
                "std": list(spec.std),
                "formula": "x = (pixel / 255 - mean) / std, per channel",
            },
        },
        "output": {
            "shape": [1, len(spec.classes)],
            "meaning": "logits (apply softmax for probabilities)",
            "labels": out.stem + ".labels.txt",
            "classes": list(spec.classes),
        },
    }
    if model_format == "tflite" and precision == "int8":
        info["input"]["dtype"], info["output"]["dtype"] = _int8_io(blob)
    return info


def with_metadata(blob: bytes, info: dict) -> bytes:
    """Embed `info` as JSON in a named metadata entry of the .tflite. The runtime ignores it; apps and tools read
    it back with `read_metadata` (or any flatbuffer reader). The TFLite Support metadata writer would be the
    standard place, but it is unmaintained and does not install next to current LiteRT."""
    from ai_edge_litert.tools import flatbuffer_utils as fb

    model = fb.convert_bytearray_to_object(bytearray(blob))
    for (
        b
    ) in model.buffers:  # weights stored after the flatbuffer (by offset) move inside it, where a rewrite keeps them
        if b.offset > 1:
            b.data, b.offset, b.size = np.frombuffer(blob, np.uint8, b.size, b.offset), 0, 0
    buffer = fb.BufferT()
    buffer.data = np.frombuffer(json.dumps(info).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = fb.schema_fb.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()] + [entry]
    return bytes(fb.convert_object_to_bytearray(model))


def read_metadata(blob: bytes) -> dict | None:
    """The app info embedded by `with_metadata`, or None for a file without it."""
    from ai_edge_litert.tools import flatbuffer_utils as fb

    model = fb.convert_bytearray_to_object(bytearray(blob))
    for entry in model.metadata or []:
        if entry.name == METADATA_NAME.encode():
            return json.loads(bytes(model.buffers[entry.buffer].data).decode())
    return None


def _int8_io(blob: bytes) -> tuple[dict, dict]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=blob)

    def describe(d: dict) -> dict:
        return {
            "dtype": np.dtype(d["dtype"]).name,
            "scale": float(d["quantization"][0]),
            "zero_point": int(d["quantization"][1]),
            "formula": "q = round(x / scale) + zero_point; x = (q - zero_point) * scale",
        }

    return describe(interpreter.get_input_details()[0]), describe(interpreter.get_output_details()[0])

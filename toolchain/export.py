"""Exporters: PyTorch -> `.tflite` (NHWC input, as Android camera pipelines deliver it) and ONNX."""

from __future__ import annotations

import contextlib
import os
import sys

import torch
from torch import nn

from .errors import ToolchainError


def to_tflite(model: nn.Module, input_size: int, in_channels: int = 3) -> bytes:
    """Convert to an fp32 `.tflite` with a (1, H, W, 3) NHWC input; BN is folded and ReLU/ReLU6 fused."""
    import litert_torch

    model = model.eval()
    wrapped = litert_torch.to_channel_last_io(model, args=[0])
    sample = (torch.zeros(1, input_size, input_size, in_channels),)
    try:
        with _quiet():
            converted = litert_torch.convert(wrapped, sample)
            content = bytes(converted.model_content())
    except Exception as e:
        raise ToolchainError(f"the TFLite converter failed on {type(model).__name__} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return content


def to_onnx(model: nn.Module, input_size: int) -> bytes:
    """Export to a single-file ONNX model (opset 20, NCHW input) with torch.onnx's default exporter."""
    import io

    buffer = io.BytesIO()
    try:
        with _quiet():
            torch.onnx.export(model.eval(), (torch.zeros(1, 3, input_size, input_size),), buffer, external_data=False)
    except Exception as e:
        raise ToolchainError(f"ONNX export failed on {type(model).__name__} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return buffer.getvalue()


def to_model_file(model: nn.Module, input_size: int, model_format: str) -> bytes:
    """The model in the format a runner times: "tflite" or "onnx"."""
    return {"tflite": to_tflite, "onnx": to_onnx}[model_format](model, input_size)


@contextlib.contextmanager
def _quiet():
    """The converter logs each step to stdout and stderr, partly from C++: silence both file descriptors so that
    stdout stays clean for --json."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])

"""What several op families share: TFLite's activation and padding enums, and output sizes."""

from __future__ import annotations

from ai_edge_litert import schema_py_generated as schema

from ..latency.signature import OpSignature

ACT = {
    "NONE": schema.ActivationFunctionType.NONE,
    "RELU": schema.ActivationFunctionType.RELU,
    "RELU6": schema.ActivationFunctionType.RELU6,
}
ACT_NAME = {v: k for k, v in ACT.items()}
PADDING = {"SAME": schema.Padding.SAME, "VALID": schema.Padding.VALID}
PADDING_NAME = {v: k for k, v in PADDING.items()}


def pad_width(sig: OpSignature) -> int:
    """Pixels of padding on each side: explicit (`P<n>`), TF's SAME for odd kernels, or none (VALID)."""
    if sig.padding.startswith("P"):
        return int(sig.padding[1:])
    return (sig.kernel - 1) // 2 if sig.padding == "SAME" else 0


def conv_output_size(sig: OpSignature) -> tuple[int, int]:
    if sig.padding == "SAME":
        return -(-sig.h // sig.stride), -(-sig.w // sig.stride)
    p = pad_width(sig)
    return (sig.h + 2 * p - sig.kernel) // sig.stride + 1, (sig.w + 2 * p - sig.kernel) // sig.stride + 1

"""Convolutions, fully-connected layers and the explicit padding some of them need."""

from __future__ import annotations

import numpy as np
import torch
from ai_edge_litert import schema_py_generated as schema
from torch import nn

from . import OpKind, TFLiteOp, register
from .common import ACT, PADDING, conv_output_size, pad_width


def _lower_conv(lw, node) -> None:
    module: nn.Conv2d = lw.module(node)
    name, source = str(node.target), node.args[0]
    _, _, h, w = lw.shape(source)
    k, s, p = module.kernel_size, module.stride, module.padding
    if k[0] != k[1] or s[0] != s[1] or module.dilation != (1, 1) or (not isinstance(p, str) and p[0] != p[1]):
        raise lw.unsupported("non-square or dilated Conv2d", name)
    depthwise = lw.is_depthwise(module)
    if module.groups > 1 and not depthwise:
        raise lw.unsupported(f"grouped Conv2d (groups={module.groups})", name)
    if p == "same" or type(module).__name__ == "Conv2dSame":  # TF's SAME, as timm's tf_ models pad it
        h, w, padding = h, w, "SAME"
    elif p == "valid":
        h, w, padding = h, w, "VALID"
    else:
        h, w, padding = lw.padded(node, name, source, k[0], s[0], p[0], "PAD")
    refs = lw.refs(source)
    if depthwise:
        lw.emit(node, lw.op("DEPTHWISE_CONV_2D", name, h, w, refs, refs, k[0], s[0], padding))
    else:
        lw.emit(
            node, lw.op("CONV_2D", name, h, w, refs, (lw.produced(name, module.out_channels),), k[0], s[0], padding)
        )


def _conv_tflite(b, sig, rng, depthwise: bool) -> int:
    oh, ow = conv_output_size(sig)
    x = b.input([1, sig.h, sig.w, sig.c_in])
    w_shape = [1, sig.kernel, sig.kernel, sig.c_out] if depthwise else [sig.c_out, sig.kernel, sig.kernel, sig.c_in]
    w = b.weight(rng.standard_normal(w_shape, dtype=np.float32) * 0.1, channel_axis=3 if depthwise else 0)
    bias = b.bias(rng.standard_normal(sig.c_out, dtype=np.float32) * 0.1)
    y = b.activation([1, oh, ow, sig.c_out])
    if depthwise:
        opts, opts_type = schema.DepthwiseConv2DOptionsT(), schema.BuiltinOptions.DepthwiseConv2DOptions
        opts.depthMultiplier = 1
    else:
        opts, opts_type = schema.Conv2DOptionsT(), schema.BuiltinOptions.Conv2DOptions
    opts.padding, opts.strideW, opts.strideH = PADDING[sig.padding], sig.stride, sig.stride
    opts.dilationWFactor = opts.dilationHFactor = 1
    opts.fusedActivationFunction = ACT[sig.act]
    b.op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [x, w, bias], [y], opts_type, opts)
    return y


def _conv_onnx(b, sig, rng, depthwise: bool) -> str:
    x = b.input([1, sig.c_in, sig.h, sig.w])
    w_shape = (sig.c_out, 1 if depthwise else sig.c_in, sig.kernel, sig.kernel)
    w = b.const((rng.standard_normal(w_shape) * 0.1).astype(np.float32))
    bias = b.const(np.zeros(sig.c_out, np.float32))
    y = b.node(
        "Conv",
        [x, w, bias],
        kernel_shape=[sig.kernel] * 2,
        strides=[sig.stride] * 2,
        pads=[pad_width(sig)] * 4,
        group=sig.c_out if depthwise else 1,
    )
    return b.activation(y, sig.act)


@register
class Conv2D(OpKind):
    name, square, fuses_activation, has_bias = "CONV_2D", False, True, True
    lowers = (nn.Conv2d,)  # depthwise convs are listed as DEPTHWISE_CONV_2D by the same rule

    def lower(self, lw, node):
        _lower_conv(lw, node)

    def tflite(self, b, sig, rng):
        return _conv_tflite(b, sig, rng, depthwise=False)

    def read(self, op: TFLiteOp):
        return {"kernel": op.inputs[1][1]}

    def onnx(self, b, sig, rng):
        return _conv_onnx(b, sig, rng, depthwise=False)


@register
class DepthwiseConv2D(OpKind):
    """One k x k filter per channel (c_in == c_out), the depthwise half of a MobileNet block."""

    name, fuses_activation, has_bias = "DEPTHWISE_CONV_2D", True, True

    def tflite(self, b, sig, rng):
        return _conv_tflite(b, sig, rng, depthwise=True)

    def read(self, op):
        return {"kernel": op.inputs[1][1]}

    def onnx(self, b, sig, rng):
        return _conv_onnx(b, sig, rng, depthwise=True)


@register
class FullyConnected(OpKind):
    name, square, fuses_activation, has_bias = "FULLY_CONNECTED", False, True, True
    lowers = (nn.Linear,)

    def lower(self, lw, node):
        module: nn.Linear = lw.module(node)
        name = str(node.target)
        lw.emit(
            node, lw.op("FULLY_CONNECTED", name, 1, 1, lw.refs(node.args[0]), (lw.produced(name, module.out_features),))
        )

    def tflite(self, b, sig, rng):
        x = b.input([1, sig.c_in])
        w = b.weight(rng.standard_normal([sig.c_out, sig.c_in], dtype=np.float32) * 0.1, channel_axis=0)
        bias = b.bias(rng.standard_normal(sig.c_out, dtype=np.float32) * 0.1)
        y = b.activation([1, sig.c_out])
        opts = schema.FullyConnectedOptionsT()
        opts.fusedActivationFunction, opts.keepNumDims = ACT[sig.act], True
        b.op(self.builtin, [x, w, bias], [y], schema.BuiltinOptions.FullyConnectedOptions, opts)
        return y

    def onnx(self, b, sig, rng):
        x = b.input([1, sig.c_in])
        w = b.const((rng.standard_normal((sig.c_out, sig.c_in)) * 0.1).astype(np.float32))
        y = b.node("Gemm", [x, w, b.const(np.zeros(sig.c_out, np.float32))], transB=1)
        return b.activation(y, sig.act)


class _Pad(OpKind):
    """Explicit zero (PAD) or -inf (PADV2, before max pooling) padding of `P<n>` pixels on each side: TFLite's
    convolutions only pad SAME or VALID, so other PyTorch paddings become a pad op before a VALID one."""

    def lower(self, lw, node):  # F.pad, as timm's Conv2dSame uses it: only symmetric spatial padding
        pads = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
        if not (isinstance(pads, (tuple, list)) and len(pads) == 4 and len(set(pads)) == 1):
            raise lw.unsupported(f"padding {pads} (only the same padding on every spatial side)", node.name)
        source = node.args[0]
        _, _, h, w = lw.shape(source)
        lw.emit(node, lw.op(self.name, node.name, h, w, lw.refs(source), lw.refs(source), padding=f"P{pads[0]}"))

    def tflite(self, b, sig, rng):
        p = pad_width(sig)
        x = b.input([1, sig.h, sig.w, sig.c_in])
        pads = b.constant(np.array([[0, 0], [p, p], [p, p], [0, 0]], dtype=np.int32))
        y = b.activation([1, sig.h + 2 * p, sig.w + 2 * p, sig.c_in])
        if self.name == "PAD":
            b.op(self.builtin, [x, pads], [y], schema.BuiltinOptions.PadOptions, schema.PadOptionsT())
        else:
            value = b.pad_value(-np.inf)
            b.op(self.builtin, [x, pads, value], [y], schema.BuiltinOptions.PadV2Options, schema.PadV2OptionsT())
        return y

    def read(self, op):
        return {"padding": f"P{(op.y[1] - op.x[1]) // 2}"}

    def onnx(self, b, sig, rng):
        p = pad_width(sig)
        x = b.input([1, sig.c_in, sig.h, sig.w])
        return b.node("Pad", [x, b.const(np.array([0, 0, p, p, 0, 0, p, p], np.int64))])


@register
class Pad(_Pad):
    name = "PAD"
    lowers = (torch.nn.functional.pad,)


@register
class PadV2(_Pad):
    name = "PADV2"

"""Pooling: global averages (MEAN) and windowed max / average pooling."""

from __future__ import annotations

import numpy as np
import torch
from ai_edge_litert import schema_py_generated as schema
from torch import nn

from . import OpKind, register
from .common import ACT, PADDING, conv_output_size, pad_width


def _is_global(size) -> bool:
    return size in (1, (1, 1), [1, 1])


@register
class Mean(OpKind):
    """The average over H x W: global average pooling, and the squeeze of a squeeze-excitation block."""

    name = "MEAN"
    lowers = (nn.AdaptiveAvgPool2d, torch.nn.functional.adaptive_avg_pool2d, "mean", torch.mean)

    def lower(self, lw, node):
        module = lw.module_or_none(node)
        if module is not None:
            size = module.output_size
        elif node.target is torch.nn.functional.adaptive_avg_pool2d:
            size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
        else:  # x.mean(dims) / torch.mean(x, dims)
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", ())
            dims = (dims,) if isinstance(dims, int) else tuple(dims)
            size = 1 if sorted(d % 4 for d in dims) == [2, 3] else None
        if not _is_global(size):
            raise lw.unsupported(f"average pooling to {size} (only global, to 1x1)", node.name)
        lw.emit_like(node, self.name, node.args[0])

    def tflite(self, b, sig, rng):
        x = b.input([1, sig.h, sig.w, sig.c_in])
        axes = b.constant(np.array([1, 2], dtype=np.int32))
        y = b.activation([1, sig.c_in])
        opts = schema.ReducerOptionsT()
        opts.keepDims = False
        b.op(self.builtin, [x, axes], [y], schema.BuiltinOptions.ReducerOptions, opts)
        return y

    def onnx(self, b, sig, rng):
        x = b.input([1, sig.c_in, sig.h, sig.w])
        return b.node("ReduceMean", [x, b.const(np.array([2, 3], np.int64))], keepdims=0)


class _Pool(OpKind):
    onnx_op, pad_kind = "", "PAD"

    def lower(self, lw, node):
        module = lw.module(node)
        k, s, p = (v if isinstance(v, int) else v[0] for v in (module.kernel_size, module.stride, module.padding))
        name, source = str(node.target), node.args[0]
        _, _, h, w = lw.shape(source)
        if getattr(module, "whole_map", False):  # one window over the whole map (TensorFlow's MobileNets end so)
            if h != w:
                raise lw.unsupported(f"pooling a non-square {h}x{w} map in one window", name)
            k = h
        h, w, padding = lw.padded(node, name, source, k, s, p, self.pad_kind)
        lw.emit(node, lw.op(self.name, name, h, w, lw.refs(source), lw.refs(source), k, s, padding))

    def read(self, op):
        return {"kernel": int(op.options.filterWidth)}

    def tflite(self, b, sig, rng):
        oh, ow = conv_output_size(sig)
        x = b.input([1, sig.h, sig.w, sig.c_in])
        y = b.activation([1, oh, ow, sig.c_in])
        opts = schema.Pool2DOptionsT()
        opts.padding, opts.strideW, opts.strideH = PADDING[sig.padding], sig.stride, sig.stride
        opts.filterWidth = opts.filterHeight = sig.kernel
        opts.fusedActivationFunction = ACT[sig.act]
        b.op(self.builtin, [x], [y], schema.BuiltinOptions.Pool2DOptions, opts)
        return y

    def onnx(self, b, sig, rng):
        x = b.input([1, sig.c_in, sig.h, sig.w])
        return b.node(
            self.onnx_op, [x], kernel_shape=[sig.kernel] * 2, strides=[sig.stride] * 2, pads=[pad_width(sig)] * 4
        )


@register
class MaxPool2D(_Pool):
    name, onnx_op = "MAX_POOL_2D", "MaxPool"
    pad_kind = "PADV2"  # max pooling pads with -inf, which needs PADV2's explicit pad value
    lowers = (nn.MaxPool2d,)


@register
class AveragePool2D(_Pool):
    name, onnx_op = "AVERAGE_POOL_2D", "AveragePool"
    lowers = (nn.AvgPool2d,)

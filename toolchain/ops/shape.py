"""Shape ops: flattening a feature map, and concatenating tensors along channels."""

from __future__ import annotations

import numpy as np
import torch
from ai_edge_litert import schema_py_generated as schema
from torch import nn

from . import OpKind, register
from .common import ACT


@register
class Reshape(OpKind):
    """Flattening a (C, H, W) map. A (C, 1, 1) map that only a linear layer reads flattens for free (the converter
    folds it into the FULLY_CONNECTED); anywhere else, at the model's output say, it is a RESHAPE."""

    name = "RESHAPE"
    lowers = (nn.Flatten, torch.flatten, "flatten")

    def lower(self, lw, node):
        source = node.args[0]
        shape = lw.shape(source)
        if len(shape) != 4 or (shape[2:] == (1, 1) and lw.read_only_by_linear(node)):
            lw.pass_through(node, source, keep_producer=False)
        else:
            lw.emit_like(node, self.name, source)

    def read(self, op):
        return {"c_out": op.x[-1]}  # channels pass through; the flat output's length is H x W x C

    def tflite(self, b, sig, rng):
        x = b.input([1, sig.h, sig.w, sig.c_in])
        flat = sig.h * sig.w * sig.c_in
        shape = b.constant(np.array([1, flat], dtype=np.int32))
        y = b.activation([1, flat])
        b.op(self.builtin, [x, shape], [y], schema.BuiltinOptions.ReshapeOptions, schema.ReshapeOptionsT())
        return y

    def onnx(self, b, sig, rng):
        return b.node("Flatten", [b.input([1, sig.c_in, sig.h, sig.w])])


@register
class Concatenation(OpKind):
    """Tensors joined along channels (SqueezeNet's fire modules, DenseNet's blocks). The signature's c_in is the
    joined width; single-op models join two halves."""

    name = "CONCATENATION"
    lowers = (torch.cat,)

    def lower(self, lw, node):
        if node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0) not in (1, -3):
            raise lw.unsupported("torch.cat along a non-channel axis", node.name)
        parts = tuple(r for t in node.args[0] for r in lw.refs(t))
        _, _, h, w = lw.shape(node)
        lw.emit(node, lw.op(self.name, node.name, h, w, parts, parts))

    def read(self, op):
        return {"c_in": sum(shape[-1] for shape in op.inputs)}

    def tflite(self, b, sig, rng):
        half = sig.c_in // 2
        x = b.input([1, sig.h, sig.w, half])
        x2 = b.input([1, sig.h, sig.w, sig.c_in - half])
        y = b.activation([1, sig.h, sig.w, sig.c_in])
        opts = schema.ConcatenationOptionsT()
        opts.axis, opts.fusedActivationFunction = 3, ACT[sig.act]
        b.op(self.builtin, [x, x2], [y], schema.BuiltinOptions.ConcatenationOptions, opts)
        return y

    def onnx(self, b, sig, rng):
        half = sig.c_in // 2
        x, x2 = b.input([1, half, sig.h, sig.w]), b.input([1, sig.c_in - half, sig.h, sig.w])
        return b.node("Concat", [x, x2], axis=1)


@register
class Squeeze(OpKind):
    """Dropping size-1 axes, as TensorFlow-era MobileNets do before their softmax (1x1xC -> C)."""

    name = "SQUEEZE"
    lowers = (torch.squeeze, "squeeze")

    def lower(self, lw, node):
        lw.emit_like(node, self.name, node.args[0])

    def tflite(self, b, sig, rng):
        x = b.input([1, sig.h, sig.w, sig.c_in])
        y = b.activation([1, sig.c_in])
        opts = schema.SqueezeOptionsT()
        opts.squeezeDims = [1, 2]
        b.op(self.builtin, [x], [y], schema.BuiltinOptions.SqueezeOptions, opts)
        return y

    def onnx(self, b, sig, rng):
        x = b.input([1, sig.c_in, sig.h, sig.w])
        return b.node("Squeeze", [x, b.const(np.array([2, 3], np.int64))])

"""Elementwise ops: residual adds, products (SiLU's x * sigmoid(x), squeeze-excitation gates, constant scales)
and the activations the converter leaves as ops of their own."""

from __future__ import annotations

import operator

import numpy as np
import torch
from ai_edge_litert import schema_py_generated as schema
from torch import nn

from . import OpKind, TFLiteOp, register
from .common import ACT


def _binary_tflite(b, builtin: str, sig, second_shape: list[int] | None) -> int:
    """`x (op) x2` with x (1, H, W, C) and x2 an input of `second_shape`, or a scalar constant when it is None."""
    x = b.input([1, sig.h, sig.w, sig.c_in])
    x2 = b.input(second_shape) if second_shape is not None else b.scalar(0.5)
    y = b.activation([1, sig.h, sig.w, sig.c_in])
    opts = schema.AddOptionsT() if builtin == "ADD" else schema.MulOptionsT()
    opts.fusedActivationFunction = ACT[sig.act]
    b.op(
        builtin,
        [x, x2],
        [y],
        schema.BuiltinOptions.AddOptions if builtin == "ADD" else schema.BuiltinOptions.MulOptions,
        opts,
    )
    return y


def _binary_onnx(b, op: str, sig, second_shape: list[int] | None) -> str:
    x = b.input([1, sig.c_in, sig.h, sig.w])
    x2 = b.input(second_shape) if second_shape is not None else b.const(np.array(0.5, np.float32))
    return b.activation(b.node(op, [x, x2]), sig.act)


@register
class Add(OpKind):
    """The sum of two tensors of one shape (a residual connection), with a fused RELU/RELU6 when one follows."""

    name, fuses_activation = "ADD", True
    lowers = (operator.add, operator.iadd, torch.add, "add")

    def lower(self, lw, node):
        a, b = node.args[0], node.args[1]
        if not isinstance(b, torch.fx.Node):  # x + constant: folded into the bias of the op that made x
            lw.fold_constant(node, a)
            return
        _, _, h, w = lw.shape(node)
        lw.emit(node, lw.op("ADD", node.name, h, w, lw.refs(a), lw.refs(a)))

    def tflite(self, b, sig, rng):
        return _binary_tflite(b, "ADD", sig, [1, sig.h, sig.w, sig.c_in])

    def onnx(self, b, sig, rng):
        return _binary_onnx(b, "Add", sig, [1, sig.c_in, sig.h, sig.w])


@register
class Mul(OpKind):
    """The product of two tensors of one shape, e.g. SiLU's x * sigmoid(x)."""

    name, fuses_activation = "MUL", True
    lowers = (operator.mul, operator.imul, torch.mul, "mul", operator.truediv, torch.div, "div")

    def lower(self, lw, node):
        a, b = node.args[0], node.args[1]
        if not isinstance(a, torch.fx.Node):
            a, b = b, a
        if not isinstance(b, torch.fx.Node):  # x * constant (or x / constant)
            lw.emit_like(node, "MUL_BY_SCALAR", a)
            return
        if node.target in (operator.truediv, torch.div, "div"):
            raise lw.unsupported("division of two tensors", node.name)
        shape_a, shape_b = lw.shape(a), lw.shape(b)
        if shape_a == shape_b:
            lw.emit_like(node, "MUL", a)
        elif len(shape_a) == len(shape_b) == 4 and (shape_a[2:] == (1, 1)) != (shape_b[2:] == (1, 1)):
            lw.emit_like(node, "MUL_BY_CHANNEL", b if shape_a[2:] == (1, 1) else a)
        else:
            raise lw.unsupported(f"a product of shapes {shape_a} and {shape_b}", node.name)

    def reads(self, op: TFLiteOp):
        return not op.input_is_const[1] and op.inputs[0] == op.inputs[1]

    def tflite(self, b, sig, rng):
        return _binary_tflite(b, "MUL", sig, [1, sig.h, sig.w, sig.c_in])

    def onnx(self, b, sig, rng):
        return _binary_onnx(b, "Mul", sig, [1, sig.c_in, sig.h, sig.w])


@register
class MulByChannel(OpKind):
    """A (1, H, W, C) map times a (1, 1, 1, C) gate: how a squeeze-excitation block rescales its channels."""

    name, builtin, fuses_activation = "MUL_BY_CHANNEL", "MUL", True

    def reads(self, op):
        return not op.input_is_const[1] and op.inputs[0] != op.inputs[1]

    def read(self, op):
        return {"h": op.y[1], "w": op.y[2]}

    def tflite(self, b, sig, rng):
        return _binary_tflite(b, "MUL", sig, [1, 1, 1, sig.c_in])

    def onnx(self, b, sig, rng):
        return _binary_onnx(b, "Mul", sig, [1, sig.c_in, 1, 1])


@register
class MulByScalar(OpKind):
    """A tensor times a constant: x * c, x / c, and the / 6 of a hard sigmoid, relu6(x + 3) / 6, as MobileNetV3's
    squeeze-excitation gates use it (the converter folds its + 3 into the bias of the conv before it and fuses its
    RELU6 there, so only this product is left)."""

    name, builtin, fuses_activation = "MUL_BY_SCALAR", "MUL", True
    lowers = (nn.Hardsigmoid, torch.nn.functional.hardsigmoid)

    def lower(self, lw, node):
        source = node.args[0]
        if not lw.fuse_activation(node, source, "RELU6", fold_constant=True):
            raise lw.unsupported("a hard sigmoid whose input is not the output of a conv or linear layer", node.name)
        lw.emit_like(node, self.name, node)

    def reads(self, op):
        return op.input_is_const[1]

    def tflite(self, b, sig, rng):
        return _binary_tflite(b, "MUL", sig, None)

    def onnx(self, b, sig, rng):
        return _binary_onnx(b, "Mul", sig, None)


class _Activation(OpKind):
    """An activation: fused into the op before it when TFLite can (RELU, RELU6 after a conv, FC, ADD or MUL that
    nothing else reads), otherwise an op of its own."""

    unit_interval = False  # its output lies in [0, 1] (int8 kernels need a fixed scale for that)

    def lower(self, lw, node):
        source = node.args[0]
        if not lw.fuse_activation(node, source, self.name):
            lw.emit_like(node, self.name, source)

    def read(self, op):
        return {"act": "NONE"}

    def tflite(self, b, sig, rng):
        x = b.input([1, sig.h, sig.w, sig.c_in])
        y = b.activation([1, sig.h, sig.w, sig.c_in], self.unit_interval)
        b.op(self.builtin, [x], [y], 0, None)
        return y

    def onnx(self, b, sig, rng):
        return b.activation(b.input([1, sig.c_in, sig.h, sig.w]), self.name)


@register
class Relu(_Activation):
    name = "RELU"
    lowers = (nn.ReLU, torch.relu, torch.nn.functional.relu, "relu")


@register
class Relu6(_Activation):
    name = "RELU6"
    lowers = (nn.ReLU6, torch.nn.functional.relu6)


@register
class HardSwish(_Activation):
    """x * relu6(x + 3) / 6, MobileNetV3's activation; TFLite never fuses it."""

    name = "HARD_SWISH"
    lowers = (nn.Hardswish, torch.nn.functional.hardswish)

    def lower(self, lw, node):
        lw.emit_like(node, self.name, node.args[0])


@register
class Logistic(_Activation):
    """The sigmoid; SiLU (x * sigmoid(x), EfficientNet's activation) lowers to LOGISTIC then MUL."""

    name, unit_interval = "LOGISTIC", True
    lowers = (nn.Sigmoid, torch.sigmoid, torch.nn.functional.sigmoid, "sigmoid", nn.SiLU, torch.nn.functional.silu)

    def lower(self, lw, node):
        source = node.args[0]
        lw.emit_like(node, self.name, source)
        if isinstance(lw.module_or_none(node), nn.SiLU) or node.target is torch.nn.functional.silu:
            lw.emit_like(node, "MUL", source)


@register
class Softmax(OpKind):
    """Class probabilities from logits, when a model ends in a softmax (over channels)."""

    name = "SOFTMAX"
    lowers = (nn.Softmax, torch.softmax, torch.nn.functional.softmax, "softmax")

    def lower(self, lw, node):
        lw.emit_like(node, self.name, node.args[0])

    def tflite(self, b, sig, rng):
        x = b.input([1, sig.h, sig.w, sig.c_in])
        y = b.activation([1, sig.h, sig.w, sig.c_in], unit_interval=True)
        opts = schema.SoftmaxOptionsT()
        opts.beta = 1.0
        b.op(self.builtin, [x], [y], schema.BuiltinOptions.SoftmaxOptions, opts)
        return y

    def onnx(self, b, sig, rng):
        return b.node("Softmax", [b.input([1, sig.c_in, sig.h, sig.w])], axis=1)

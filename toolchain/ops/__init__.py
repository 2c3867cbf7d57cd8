"""The op registry: one entry per op kind a runtime executes, and everything the toolchain knows about it.

An `OpKind` says, for one kind of op (CONV_2D, ADD, HARD_SWISH, ...):
  * how it is listed from a traced PyTorch model (`lowers`: the modules, functions and methods it stands for,
    and `lower`, which emits it into the op list with its channel counts expressed through the channel groups);
  * its shape rules (`square`: output channels equal input channels; `fuses_activation`: the converter folds a
    following RELU/RELU6 into it);
  * its single-op `.tflite` builder and the reader that recovers its `OpSignature` from any `.tflite` file;
  * its single-op ONNX builder.

`graph.py` (op lists), `latency/tflite.py`, `latency/onnx_ops.py`, `latency/predictor.py` and the log importer ask
this registry and never branch on an op's kind, so a new op is one entry here plus its test. The entries live in
the modules of this package by family (convolutions, elementwise ops, pooling, shape ops); `register` adds one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import ToolchainError

if TYPE_CHECKING:
    from torch import fx

    from ..latency.signature import OpSignature
    from ..lowering import Lowering


class OpKind:
    """One kind of op. Subclasses set the class attributes and override what applies to them."""

    name: ClassVar[str]  # the latency table's kind, e.g. "CONV_2D"
    builtin: ClassVar[str] = ""  # the TFLite builtin operator it runs as (default: `name`)
    square: ClassVar[bool] = True  # output channels == input channels, so one channel count is free
    fuses_activation: ClassVar[bool] = False  # TFLite folds a following RELU/RELU6 into this op
    has_bias: ClassVar[bool] = False  # a constant added to its output folds into its bias
    lowers: ClassVar[tuple[Any, ...]] = ()  # nn.Module types, functions or method names (str) it is listed for

    def lower(self, lw: Lowering, node: fx.Node) -> None:
        """Append this op (and any op it needs before it, such as an explicit PAD) to `lw`'s op list."""
        raise NotImplementedError(f"{self.name} is not listed from PyTorch models directly")

    def tflite(self, b: Any, sig: OpSignature, rng: np.random.Generator) -> int:
        """Add the op computing `sig` to a single-op model builder, with its inputs; return its output tensor."""
        raise NotImplementedError(f"no single-op .tflite builder for {self.name}")

    def reads(self, op: TFLiteOp) -> bool:
        """Whether a `.tflite` op of this kind's builtin is this kind (several kinds may share one builtin)."""
        return True

    def read(self, op: TFLiteOp) -> dict[str, Any]:
        """The signature fields (beyond kind, h, w, c_in, c_out) of a `.tflite` op of this kind."""
        return {}

    def onnx(self, b: Any, sig: OpSignature, rng: np.random.Generator) -> str:
        """Add the node(s) computing `sig` to a single-op ONNX builder, with their inputs; return the output name."""
        raise NotImplementedError(f"no single-op ONNX builder for {self.name}")


class TFLiteOp:
    """A `.tflite` operator as the readers see it: builtin name, input and output shapes, and options."""

    def __init__(
        self, builtin: str, inputs: list[list[int]], outputs: list[list[int]], options: Any, input_is_const: list[bool]
    ):
        self.builtin, self.inputs, self.outputs, self.options = builtin, inputs, outputs, options
        self.input_is_const = input_is_const

    @property
    def x(self) -> list[int]:
        return self.inputs[0]

    @property
    def y(self) -> list[int]:
        return self.outputs[0]


_KINDS: dict[str, OpKind] = {}


def register(cls: type[OpKind]) -> type[OpKind]:
    """Class decorator: add an op kind to the registry under its `name`."""
    if not cls.builtin:
        cls.builtin = cls.name
    if cls.name in _KINDS:
        raise ValueError(f"op kind {cls.name} is registered twice")
    _KINDS[cls.name] = cls()
    return cls


def kind(name: str) -> OpKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise ToolchainError(f"unknown op kind {name!r}: known kinds are {', '.join(sorted(_KINDS))}") from None


def kinds() -> list[OpKind]:
    return [_KINDS[n] for n in sorted(_KINDS)]


def for_builtin(builtin: str, op: TFLiteOp) -> OpKind | None:
    """The registered kind a `.tflite` operator is, or None for a builtin the registry does not know."""
    return next((k for k in _KINDS.values() if k.builtin == builtin and k.reads(op)), None)


def lowering_rules() -> tuple[list[tuple[type, OpKind]], dict[Callable | str, OpKind]]:
    """(module type, kind) pairs, checked in registration order with isinstance, and a function/method -> kind map."""
    modules, calls = [], {}
    for k in _KINDS.values():
        for target in k.lowers:
            if isinstance(target, type):
                modules.append((target, k))
            else:
                calls[target] = k
    return modules, calls


from . import conv, elementwise, pool, shape  # noqa: E402,F401  (register the entries)

"""The op list a runtime executes for a traced model, with channel counts left symbolic.

`list_ops(traced, produced_group, model_format)` walks the torch.fx graph in execution order and asks the op
registry (`toolchain.ops`) how each node lowers: a conv + BN + ReLU becomes one CONV_2D with a fused RELU, a
residual add + ReLU one ADD, a SiLU a LOGISTIC and a MUL, and so on. Each op's channel counts are `ChannelRef`s:
a channel group's kept count, or a fixed number, so any pruning policy maps to concrete `OpSignature`s without
converting anything. The `.tflite` list has TFLite's explicit PAD before convs whose padding is neither SAME nor
VALID; the ONNX list keeps that padding on the conv (`P<n>`), as ONNX Runtime runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torchvision
from torch import fx, nn

from . import ops
from .errors import ToolchainError
from .latency.signature import OpSignature

MODEL_FORMATS = ("tflite", "onnx")
# Modules and functions the converter removes: BN folds into the conv before it; dropout, stochastic depth and
# identity vanish at inference.
PASS_THROUGH_MODULES = (nn.BatchNorm2d, nn.Dropout, nn.Identity)
PASS_THROUGH_CALLS = (
    torch.nn.functional.batch_norm,
    torch.nn.functional.dropout,
    torchvision.ops.stochastic_depth,
    "contiguous",
)
PASS_THROUGH_CLASS_NAMES = ("DropPath",)  # timm's stochastic depth


@dataclass(frozen=True)
class ChannelRef:
    """Where a tensor's channel count comes from: a group's kept count, or a fixed number."""

    group: int | None
    fixed: int

    def resolve(self, keep: Sequence[int]) -> int:
        return keep[self.group] if self.group is not None else self.fixed


@dataclass(frozen=True)
class GraphOp:
    """One op of the runtime's graph, with channels left symbolic. A tensor's channels are a tuple of sources
    (several after a concat), and its channel count is their sum."""

    kind: str
    module: str
    h: int
    w: int
    inputs: tuple[ChannelRef, ...]
    output: tuple[ChannelRef, ...]
    kernel: int = 1
    stride: int = 1
    padding: str = "VALID"  # SAME, VALID, or P<n>: explicit padding of n pixels on each side
    act: str = "NONE"

    def signature(self, keep: Sequence[int]) -> OpSignature:
        c_in = sum(ref.resolve(keep) for ref in self.inputs)
        c_out = sum(ref.resolve(keep) for ref in self.output)
        return OpSignature(self.kind, self.h, self.w, c_in, c_out, self.kernel, self.stride, self.padding, self.act)

    @property
    def groups_read(self) -> tuple[int, ...]:
        return tuple(sorted({r.group for r in (*self.inputs, *self.output) if r.group is not None}))


class Lowering:
    """The state of one walk: each node's channel refs, the op that computed it (for fusing what follows), and
    the op list so far. Registry entries call back into it to emit ops."""

    def __init__(self, traced: fx.GraphModule, produced_group: dict[str, int], model_format: str):
        self.traced, self.produced_group = traced, produced_group
        self.explicit_padding = model_format == "tflite"  # ONNX convs pad by themselves
        self.ops: list[GraphOp] = []
        self._refs: dict[fx.Node, tuple[ChannelRef, ...]] = {}
        self._producer: dict[fx.Node, int] = {}  # node -> index in `ops` of the op that computed it
        self._module_rules, self._call_rules = ops.lowering_rules()

    def run(self) -> list[GraphOp]:
        for node in self.traced.graph.nodes:
            if node.op == "placeholder":
                self._refs[node] = (ChannelRef(None, self.shape(node)[1]),)
            elif node.op in ("call_module", "call_function", "call_method") and "tensor_meta" in node.meta:
                self._lower(node)  # nodes without a tensor output (shape reads, asserts) leave no op behind
        return self.ops

    def _lower(self, node: fx.Node) -> None:
        module = self.module_or_none(node)
        if module is not None:
            if isinstance(module, PASS_THROUGH_MODULES) or type(module).__name__ in PASS_THROUGH_CLASS_NAMES:
                return self.pass_through(node, node.args[0])
            kind = next((k for t, k in self._module_rules if isinstance(module, t)), None)
            what = type(module).__name__
        else:
            if node.target in PASS_THROUGH_CALLS:
                return self.pass_through(node, node.args[0])
            kind = self._call_rules.get(node.target)
            what = str(getattr(node.target, "__name__", node.target))
        if kind is None:
            raise self.unsupported(what, str(node.target) if module is not None else node.name)
        kind.lower(self, node)

    # --- what registry entries use ---------------------------------------------------------------------------

    def module(self, node: fx.Node) -> nn.Module:
        return self.traced.get_submodule(str(node.target))

    def module_or_none(self, node: fx.Node) -> nn.Module | None:
        return self.module(node) if node.op == "call_module" else None

    def shape(self, node: fx.Node) -> tuple[int, ...]:
        return tuple(node.meta["tensor_meta"].shape)

    def refs(self, node: fx.Node) -> tuple[ChannelRef, ...]:
        return self._refs[node]

    def produced(self, module: str, channels: int) -> ChannelRef:
        """The channels a conv or linear layer writes: its group's, or fixed when they are never pruned."""
        return ChannelRef(self.produced_group.get(module), channels)

    @staticmethod
    def is_depthwise(module: nn.Module) -> bool:
        return is_depthwise(module)

    @staticmethod
    def op(
        kind: str,
        module: str,
        h: int,
        w: int,
        inputs,
        output,
        kernel: int = 1,
        stride: int = 1,
        padding: str = "VALID",
        act: str = "NONE",
    ) -> GraphOp:
        return GraphOp(kind, module, h, w, tuple(inputs), tuple(output), kernel, stride, padding, act)

    def emit(self, node: fx.Node, op: GraphOp) -> None:
        self.ops.append(op)
        self._producer[node] = len(self.ops) - 1
        self._refs[node] = op.output

    def emit_like(self, node: fx.Node, kind: str, source: fx.Node) -> None:
        """Emit a shape-preserving op of `kind` on `source`'s tensor (H x W of a map, 1 x 1 of a vector)."""
        shape = self.shape(source)
        h, w = shape[2:] if len(shape) == 4 else (1, 1)
        refs = self.refs(source)
        self.emit(node, self.op(kind, node.name, h, w, refs, refs))

    def pass_through(self, node: fx.Node, source: fx.Node, keep_producer: bool = True) -> None:
        self._refs[node] = self._refs[source]
        if keep_producer and source in self._producer and self.sole_reader(source):
            self._producer[node] = self._producer[source]

    def read_only_by_linear(self, node: fx.Node) -> bool:
        """Whether every op that reads `node` (looking through dropout-like pass-throughs) is a linear layer."""

        def linear(user: fx.Node) -> bool:
            module = self.module_or_none(user)
            if module is not None and (
                isinstance(module, PASS_THROUGH_MODULES) or type(module).__name__ in PASS_THROUGH_CLASS_NAMES
            ):
                return self.read_only_by_linear(user)
            return isinstance(module, nn.Linear) or user.target is torch.nn.functional.linear

        return bool(node.users) and all(linear(user) for user in node.users)

    @staticmethod
    def sole_reader(node: fx.Node) -> bool:
        """Whether one op reads `node`'s tensor (shape reads such as `x.ndim` in timm's BatchNormAct2d do not
        count): only then can what follows fuse into the op that computed it."""
        return sum(1 for user in node.users if "tensor_meta" in user.meta) == 1

    def padded(
        self, node: fx.Node, name: str, source: fx.Node, kernel: int, stride: int, pad: int, pad_kind: str
    ) -> tuple[int, int, str]:
        """How a conv or pool's padding is run: SAME when it is TF's symmetric SAME (stride 1, pad (k-1)/2), VALID
        for none, otherwise explicit: a `pad_kind` op before a VALID op in TFLite, `P<n>` on the op in ONNX.
        Returns the H x W the op itself sees and its padding."""
        _, _, h, w = self.shape(source)
        if pad == 0:
            return h, w, "VALID"
        if stride == 1 and kernel % 2 == 1 and pad == (kernel - 1) // 2:
            return h, w, "SAME"
        if not self.explicit_padding:
            return h, w, f"P{pad}"
        refs = self.refs(source)
        self.emit(node, self.op(pad_kind, name + ".pad", h, w, refs, refs, padding=f"P{pad}"))
        return h + 2 * pad, w + 2 * pad, "VALID"

    def fuse_activation(self, node: fx.Node, source: fx.Node, act: str, fold_constant: bool = False) -> bool:
        """Fuse `act` into the op that computed `source` when that op can take it and nothing else reads `source`,
        as the converter does. With `fold_constant`, the op must also have a bias to absorb a constant added
        before the activation (a hard sigmoid's + 3)."""
        index = self._producer.get(source)
        if index is None or not self.sole_reader(source):
            return False
        op, kind = self.ops[index], ops.kind(self.ops[index].kind)
        if not kind.fuses_activation or op.act != "NONE" or (fold_constant and not kind.has_bias):
            return False
        self.ops[index] = replace(op, act=act)
        self._producer[node] = index
        self._refs[node] = self._refs[source]
        return True

    def fold_constant(self, node: fx.Node, source: fx.Node) -> None:
        """`source + constant`: the converter folds the constant into the bias of the op that computed `source`."""
        index = self._producer.get(source)
        if (
            index is None
            or not self.sole_reader(source)
            or not ops.kind(self.ops[index].kind).has_bias
            or self.ops[index].act != "NONE"
        ):
            raise self.unsupported(
                "adding a constant to a tensor that is not a conv's or linear layer's own output", node.name
            )
        self.pass_through(node, source)

    @staticmethod
    def unsupported(what: str, where: str) -> ToolchainError:
        known = sorted({getattr(t, "__name__", str(t)) for k in ops.kinds() for t in k.lowers})
        return ToolchainError(
            f"{where}: {what} has no latency rule yet, so this model's latency cannot be predicted "
            f"(layers with rules: {', '.join(known)})"
        )


def is_depthwise(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d)
        and module.groups > 1
        and module.groups == module.in_channels == module.out_channels
    )


def list_ops(traced: fx.GraphModule, produced_group: dict[str, int], model_format: str) -> list[GraphOp]:
    """The ops `model_format`'s runtime executes for `traced` (shapes already propagated into node.meta)."""
    return Lowering(traced, produced_group, model_format).run()

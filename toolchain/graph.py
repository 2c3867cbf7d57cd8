"""A network as the rest of the pipeline sees it: prunable channel groups and the ops the runtime will execute.

`analyze(model, input_size)` returns a `ModelGraph` with
  * `groups`: the prunable `ChannelGroup`s in forward order. Channels that must be pruned together (everything a
    residual add sums, a depthwise conv and its producer, the BN after a conv, the classifier input after the
    last features) form one group; Torch-Pruning's dependency graph finds them. The input image channels and the
    classifier outputs are never pruned.
  * `ops`: the ops of the exported `.tflite` in execution order (conv + BN + activation fused into one CONV_2D,
    the add + ReLU of a residual into one ADD, and so on), each with its channel counts expressed through the
    groups, so that any pruning policy maps to concrete `OpSignature`s without converting anything.

Torch-Pruning objects never cross this module's API; `ChannelSurgery` uses them to cut channels physically.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Sequence

import torch
import torch_pruning as tp
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .errors import ToolchainError
from .latency.signature import OpSignature


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are pruned together, described by the layer that produces them (its `lead`)."""

    index: int
    channels: int
    lead: str  # module name of the first conv/linear, in forward order, that produces these channels
    members: tuple[str, ...]  # every conv/linear/BN whose out- or in-channels are these channels
    consumers: tuple[str, ...]  # the non-depthwise convs and linears that read these channels
    in_channels: int
    h: int  # the lead's input feature map
    w: int
    kernel: int
    stride: int


@dataclass(frozen=True)
class ChannelRef:
    """Where a tensor's channel count comes from: a group's kept count, or a fixed number."""

    group: int | None
    fixed: int

    def resolve(self, kept: Sequence[int]) -> int:
        return kept[self.group] if self.group is not None else self.fixed


@dataclass(frozen=True)
class GraphOp:
    """One op of the exported graph, with channels left symbolic. A tensor's channels are a tuple of sources
    (several after a concat), and its channel count is their sum."""

    kind: str
    module: str
    h: int
    w: int
    inputs: tuple[ChannelRef, ...]
    output: tuple[ChannelRef, ...]
    kernel: int = 1
    stride: int = 1
    padding: str = "VALID"
    act: str = "NONE"

    def signature(self, kept: Sequence[int]) -> OpSignature:
        c_in = sum(ref.resolve(kept) for ref in self.inputs)
        c_out = sum(ref.resolve(kept) for ref in self.output)
        return OpSignature(self.kind, self.h, self.w, c_in, c_out, self.kernel, self.stride, self.padding, self.act)

    @property
    def groups_read(self) -> tuple[int, ...]:
        return tuple(sorted({r.group for r in (*self.inputs, *self.output) if r.group is not None}))


@dataclass(frozen=True)
class ModelGraph:
    groups: tuple[ChannelGroup, ...]
    exported_ops: tuple[GraphOp, ...] | None  # None when a layer has no op rule; `ops` then raises why
    input_size: int
    ops_error: str = ""
    warnings: tuple[str, ...] = ()  # channels left unpruned, and why

    @property
    def ops(self) -> tuple[GraphOp, ...]:
        if self.exported_ops is None:
            raise ToolchainError(self.ops_error)
        return self.exported_ops

    @property
    def full_widths(self) -> tuple[int, ...]:
        return tuple(g.channels for g in self.groups)

    def signatures(self, kept: Sequence[int] | None = None) -> list[OpSignature]:
        kept = self.full_widths if kept is None else kept
        return [op.signature(kept) for op in self.ops]


_ACTIVATIONS = {nn.ReLU: "RELU", nn.ReLU6: "RELU6"}
_FUNCTIONAL_ACTIVATIONS = {torch.relu: "RELU", torch.nn.functional.relu: "RELU", torch.nn.functional.relu6: "RELU6"}
_ADDS = {operator.add, operator.iadd, torch.add}
_FLATTENS = {torch.flatten}
_PASS_THROUGH_MODULES = (nn.BatchNorm2d, nn.Dropout, nn.Identity, nn.Flatten)


def analyze(model: nn.Module, input_size: int) -> ModelGraph:
    """Channel groups and exported ops of `model` for (1, 3, input_size, input_size) inputs."""
    model = model.eval()
    traced = _trace(model)
    example = torch.zeros(1, 3, input_size, input_size)
    with torch.no_grad():
        ShapeProp(traced).propagate(example)
    classifier = _classifier_name(traced)
    groups, out_group, warnings = _channel_groups(model, example, classifier)
    try:
        return ModelGraph(groups, tuple(_exported_ops(traced, out_group)), input_size, warnings=warnings)
    except ToolchainError as e:  # pruning still works; only latency prediction needs the op list
        return ModelGraph(groups, None, input_size, str(e), warnings)


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as e:
        raise ToolchainError(f"cannot trace {type(model).__name__} with torch.fx ({type(e).__name__}: {str(e).splitlines()[0]}): "
                             "data-dependent control flow in forward() is not supported") from None


def _classifier_name(traced: fx.GraphModule) -> str:
    """The module that produces the network's output (walking back through flatten/dropout-like nodes)."""
    node = next(n for n in traced.graph.nodes if n.op == "output").args[0]
    while isinstance(node, fx.Node):
        if node.op == "call_module" and isinstance(traced.get_submodule(node.target), (nn.Linear, nn.Conv2d)):
            return str(node.target)
        node = node.args[0] if node.args else None
    raise ToolchainError("cannot find the classifier layer (a Linear or Conv2d producing the output): the model must end in one")


def _channel_groups(model: nn.Module, example: torch.Tensor, classifier: str):
    names = {module: name for name, module in model.named_modules()}
    order = {name: i for i, name in enumerate(names.values())}
    try:
        dep_graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        all_groups = list(dep_graph.get_all_groups(ignored_layers=[model.get_submodule(classifier)], root_module_types=[nn.Conv2d, nn.Linear]))
    except Exception as e:
        raise ToolchainError(f"cannot find the channel dependencies of {type(model).__name__} ({type(e).__name__}: {e}): "
                             "this topology (e.g. a channel shuffle) is not prunable yet") from None
    found, warnings = [], []
    for group in all_groups:
        grouped = [names[i.dep.target.module] for i in group.items if isinstance(i.dep.target.module, nn.Conv2d)
                   and i.dep.target.module.groups > 1 and not _is_depthwise(i.dep.target.module)]
        if grouped:
            warnings.append(f"{grouped[0]}: grouped convolution (groups={model.get_submodule(grouped[0]).groups}); "
                            "its channels are left unpruned to keep group alignment")
            continue
        producers, consumers, members = [], [], set()
        for item in group.items:
            module = item.dep.target.module
            if module not in names or not isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                continue
            members.add(names[module])
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if item.dep.handler.__name__ == "prune_out_channels":
                    producers.append(names[module])
                elif not _is_depthwise(module):
                    consumers.append(names[module])
        if not producers:
            continue
        producers.sort(key=order.__getitem__)
        lead = next((p for p in producers if not _is_depthwise(model.get_submodule(p))), None)
        if lead is None:
            continue  # only depthwise convs: their channels belong to a producer outside the group
        found.append((order[lead], lead, producers, sorted(set(consumers), key=order.__getitem__), members, len(group.items[0].idxs)))
    found.sort()
    shapes = _input_shapes(model, example)
    groups, out_group = [], {}
    for index, (_, lead, producers, consumers, members, channels) in enumerate(found):
        module = model.get_submodule(lead)
        for p in producers:
            out_group[p] = index
        h, w = shapes[lead]
        groups.append(ChannelGroup(
            index=index, channels=channels, lead=lead, members=tuple(sorted(members, key=order.__getitem__)), consumers=tuple(consumers),
            in_channels=module.in_channels if isinstance(module, nn.Conv2d) else module.in_features,
            h=h, w=w, kernel=module.kernel_size[0] if isinstance(module, nn.Conv2d) else 1,
            stride=module.stride[0] if isinstance(module, nn.Conv2d) else 1,
        ))
    return tuple(groups), out_group, tuple(warnings)


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels == module.out_channels


def _input_shapes(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, int]]:
    shapes: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            def hook(m, inputs, output, name=name):
                x = inputs[0]
                shapes[name] = (x.shape[-2], x.shape[-1]) if x.ndim == 4 else (1, 1)
            hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(example)
    for h in hooks:
        h.remove()
    return shapes


# --- the exported op list ------------------------------------------------------------------------------------------


def _exported_ops(traced: fx.GraphModule, out_group: dict[str, int]) -> list[GraphOp]:
    """Walk the traced graph and emit the ops the TFLite converter produces, fusing BN and activations."""
    ref: dict[fx.Node, tuple[ChannelRef, ...]] = {}
    producer: dict[fx.Node, int] = {}  # node -> index in `ops` of the op that computed it (for fusing activations)
    ops: list[GraphOp] = []

    def shape(node: fx.Node) -> tuple[int, ...]:
        return tuple(node.meta["tensor_meta"].shape)

    def emit(node: fx.Node, op: GraphOp) -> None:
        ops.append(op)
        producer[node] = len(ops) - 1
        ref[node] = op.output

    def pass_through(node: fx.Node, source: fx.Node) -> None:
        ref[node] = ref[source]
        if source in producer and len(source.users) == 1:
            producer[node] = producer[source]

    for node in traced.graph.nodes:
        if node.op == "placeholder":
            ref[node] = (ChannelRef(None, shape(node)[1]),)
        elif node.op == "output" or node.op == "get_attr":
            continue
        elif node.op == "call_module":
            module = traced.get_submodule(node.target)
            source = node.args[0]
            if isinstance(module, nn.Conv2d):
                _emit_conv(node, module, str(node.target), source, shape(source), ref, out_group, emit)
            elif isinstance(module, nn.Linear):
                out = (ChannelRef(out_group.get(str(node.target)), module.out_features),)
                emit(node, GraphOp("FULLY_CONNECTED", str(node.target), 1, 1, ref[source], out))
            elif type(module) in _ACTIVATIONS:
                _activation(node, source, _ACTIVATIONS[type(module)], ops, producer, ref, shape, emit)
            elif isinstance(module, _PASS_THROUGH_MODULES):
                if isinstance(module, nn.Flatten):
                    _flatten(node, source, shape, ref, ops, producer, emit)
                else:
                    pass_through(node, source)
            elif isinstance(module, nn.AdaptiveAvgPool2d) and _is_global(module.output_size):
                _global_pool(node, source, shape, ref, emit)
            elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
                _pool(node, module, str(node.target), source, shape(source), ref, emit)
            else:
                raise _unsupported(type(module).__name__, str(node.target))
        elif node.target in _ADDS and all(isinstance(a, fx.Node) for a in node.args[:2]):
            a = node.args[0]
            _, _, h, w = shape(node)
            emit(node, GraphOp("ADD", node.name, h, w, ref[a], ref[a]))
        elif node.target in _FUNCTIONAL_ACTIVATIONS:
            _activation(node, node.args[0], _FUNCTIONAL_ACTIVATIONS[node.target], ops, producer, ref, shape, emit)
        elif node.target is torch.nn.functional.adaptive_avg_pool2d and _is_global(node.args[1]):
            _global_pool(node, node.args[0], shape, ref, emit)
        elif node.target == "mean" and tuple(node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", ())) in ((2, 3), (-2, -1)):
            _global_pool(node, node.args[0], shape, ref, emit)
        elif node.target in _FLATTENS or node.target == "flatten":
            _flatten(node, node.args[0], shape, ref, ops, producer, emit)
        elif node.target is torch.cat:
            if node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0) not in (1, -3):
                raise _unsupported("torch.cat along a non-channel axis", node.name)
            parts = tuple(r for t in node.args[0] for r in ref[t])
            _, _, h, w = shape(node)
            emit(node, GraphOp("CONCATENATION", node.name, h, w, parts, parts))
        else:
            raise _unsupported(str(getattr(node.target, "__name__", node.target)), node.name)
    return ops


def _emit_conv(node, module: nn.Conv2d, name: str, source, in_shape, ref, out_group, emit) -> None:
    _, _, h, w = in_shape
    k, s, p = module.kernel_size[0], module.stride[0], module.padding[0]
    if module.kernel_size[0] != module.kernel_size[1] or module.stride[0] != module.stride[1] or module.dilation != (1, 1):
        raise _unsupported("non-square or dilated Conv2d", name)
    padding = _padding(k, s, p)
    if padding == "PAD":
        emit(node, GraphOp("PAD", name + ".pad", h, w, ref[source], ref[source], kernel=p))
        h, w, padding = h + 2 * p, w + 2 * p, "VALID"
    if _is_depthwise(module):
        emit(node, GraphOp("DEPTHWISE_CONV_2D", name, h, w, ref[source], ref[source], k, s, padding))
    elif module.groups == 1:
        out = (ChannelRef(out_group.get(name), module.out_channels),)
        emit(node, GraphOp("CONV_2D", name, h, w, ref[source], out, k, s, padding))
    else:
        raise _unsupported(f"grouped Conv2d (groups={module.groups})", name)


def _padding(kernel: int, stride: int, pad: int) -> str:
    """How the converter lowers PyTorch padding: SAME when it is TF's symmetric SAME (stride 1, pad (k-1)/2),
    VALID for no padding, otherwise an explicit PAD op before a VALID conv."""
    if pad == 0:
        return "VALID"
    if stride == 1 and kernel % 2 == 1 and pad == (kernel - 1) // 2:
        return "SAME"
    return "PAD"


def _pool(node, module, name, source, in_shape, ref, emit) -> None:
    k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
    s = module.stride if isinstance(module.stride, int) else module.stride[0]
    p = module.padding if isinstance(module.padding, int) else module.padding[0]
    _, _, h, w = in_shape
    kind = "MAX_POOL_2D" if isinstance(module, nn.MaxPool2d) else "AVERAGE_POOL_2D"
    padding = _padding(k, s, p)
    if padding == "PAD":  # max pooling pads with -inf, which needs PADV2's explicit pad value
        emit(node, GraphOp("PADV2" if kind == "MAX_POOL_2D" else "PAD", name + ".pad", h, w, ref[source], ref[source], kernel=p))
        h, w, padding = h + 2 * p, w + 2 * p, "VALID"
    emit(node, GraphOp(kind, name, h, w, ref[source], ref[source], k, s, padding))


def _global_pool(node, source, shape, ref, emit) -> None:
    _, _, h, w = shape(source)
    emit(node, GraphOp("MEAN", node.name, h, w, ref[source], ref[source]))


def _flatten(node, source, shape, ref, ops, producer, emit) -> None:
    """Flattening a (C, 1, 1) map is free (the converter folds it into the next op); otherwise a RESHAPE."""
    in_shape = shape(source)
    if len(in_shape) != 4 or in_shape[2:] == (1, 1):
        ref[node] = ref[source]
        return
    h, w = in_shape[2], in_shape[3]
    emit(node, GraphOp("RESHAPE", node.name, h, w, ref[source], ref[source]))


def _activation(node, source, act: str, ops, producer, ref, shape, emit) -> None:
    """Fuse into the op that produced `source` when it is that op's only use (as the converter does)."""
    index = producer.get(source)
    if index is not None and len(source.users) == 1 and ops[index].kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "FULLY_CONNECTED") and ops[index].act == "NONE":
        op = ops[index]
        ops[index] = GraphOp(op.kind, op.module, op.h, op.w, op.inputs, op.output, op.kernel, op.stride, op.padding, act)
        producer[node] = index
        ref[node] = ref[source]
        return
    _, _, h, w = shape(source) if len(shape(source)) == 4 else (0, 0, 1, 1)
    emit(node, GraphOp(act, node.name, h, w, ref[source], ref[source]))


def _is_global(size) -> bool:
    return size in (1, (1, 1), [1, 1])


def _unsupported(what: str, where: str) -> ToolchainError:
    return ToolchainError(f"{where}: {what} has no latency rule yet, so this model's latency cannot be predicted; supported "
                          "layers are Conv2d (plain and depthwise), Linear, BatchNorm2d, ReLU/ReLU6, residual adds, concat, "
                          "max/avg/global-average pooling, flatten")


class ChannelSurgery:
    """Physical channel removal on one model instance, with Torch-Pruning's dependency graph.

    `plan(keep)` records, for every consumer layer, which of its input channels will go (Torch-Pruning maps the
    group's channel indices through concats and the like), so that weights can be rebuilt on the dense model
    before `apply()` cuts. `apply()` cuts one group at a time and asks Torch-Pruning for each group's plan only
    then: index maps through a concat depend on the current widths of its inputs, so plans made up front go
    stale as soon as another group is cut.
    """

    def __init__(self, model: nn.Module, graph: ModelGraph):
        self.model = model
        self.graph = graph
        example = torch.zeros(1, 3, graph.input_size, graph.input_size)
        try:
            self._dep_graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        except Exception as e:
            raise ToolchainError(f"cannot build channel dependencies of {type(model).__name__} ({type(e).__name__}: {e}): "
                                 "this topology is not prunable yet") from None
        self._names = {m: n for n, m in model.named_modules()}
        self._drops: list[tuple[ChannelGroup, list[int]]] = []
        self.dropped_inputs: dict[str, set[int]] = {}

    def _plan_group(self, group: ChannelGroup, drop: list[int]):
        module = self.model.get_submodule(group.lead)
        handler = tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels
        return self._dep_graph.get_pruning_group(module, handler, idxs=drop)

    def plan(self, keep: Sequence[torch.Tensor]) -> None:
        """`keep[g]` holds the channel indices group g keeps."""
        for group, kept in zip(self.graph.groups, keep):
            drop = sorted(set(range(group.channels)) - {int(i) for i in kept})
            if not drop:
                continue
            for item in self._plan_group(group, drop).items:
                target = item.dep.target.module
                if item.dep.handler.__name__ == "prune_in_channels" and isinstance(target, (nn.Conv2d, nn.Linear)) \
                        and not _is_depthwise(target):
                    self.dropped_inputs.setdefault(self._names[target], set()).update(int(i) for i in item.idxs)
            self._drops.append((group, drop))

    def apply(self) -> nn.Module:
        for group, drop in self._drops:
            self._plan_group(group, drop).prune()
        self._drops = []
        return self.model


def pruned_copy(model: nn.Module, graph: ModelGraph, keep: Sequence[int]) -> nn.Module:
    """A copy of `model` with the first `keep[g]` channels of each group: the right shapes, arbitrary weights
    (for measuring a variant's latency, or for loading a pruned checkpoint's weights into)."""
    import copy

    surgery = ChannelSurgery(copy.deepcopy(model).eval(), graph)
    surgery.plan([torch.arange(k) for k in keep])
    return surgery.apply()

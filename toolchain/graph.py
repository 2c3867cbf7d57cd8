"""A network as the rest of the pipeline sees it: prunable channel groups and the ops each runtime will execute.

`analyze(model, input_size)` returns a `ModelGraph` with
  * `groups`: the prunable `ChannelGroup`s in forward order. Channels that must be pruned together (everything a
    residual add sums, a depthwise conv and its producer, the BN after a conv, the classifier input after the
    last features) form one group; Torch-Pruning's dependency graph finds them. The input image channels and the
    classifier outputs are never pruned.
  * `ops(model_format)`: the ops of the exported `.tflite` (or ONNX) model in execution order, each with its
    channel counts expressed through the groups (`toolchain.lowering`), so that any pruning policy maps to
    concrete `OpSignature`s without converting anything.

Torch-Pruning objects never cross this module's API; `toolchain.surgery` uses them to cut channels physically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .errors import ToolchainError
from .latency.signature import OpSignature
from .lowering import MODEL_FORMATS, GraphOp, is_depthwise, list_ops


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
class ModelGraph:
    groups: tuple[ChannelGroup, ...]
    input_size: int
    op_lists: dict[str, tuple[GraphOp, ...] | str] = field(default_factory=dict)  # per model format: ops, or why none
    warnings: tuple[str, ...] = ()  # channels left unpruned, and why
    norm_after: dict[str, str] = field(default_factory=dict)  # conv/linear -> the BatchNorm that alone reads it

    def ops(self, model_format: str = "tflite") -> tuple[GraphOp, ...]:
        listed = self.op_lists.get(model_format, f"no op list for {model_format} models")
        if isinstance(listed, str):
            raise ToolchainError(listed)
        return listed

    @property
    def channels(self) -> tuple[int, ...]:
        """Each group's full width: the unpruned model's kept-channel vector."""
        return tuple(g.channels for g in self.groups)

    def signatures(self, keep: Sequence[int] | None = None, model_format: str = "tflite") -> list[OpSignature]:
        keep = self.channels if keep is None else keep
        return [op.signature(keep) for op in self.ops(model_format)]


def analyze(model: nn.Module, input_size: int) -> ModelGraph:
    """Channel groups and per-runtime op lists of `model` for (1, 3, input_size, input_size) inputs."""
    model = model.eval()
    _check_family(model)
    traced = _trace(model)
    example = torch.zeros(1, 3, input_size, input_size)
    with torch.no_grad():
        ShapeProp(traced).propagate(example)
    classifier = _classifier_name(traced)
    groups, produced_group, warnings = _channel_groups(model, example, classifier)
    op_lists: dict[str, tuple[GraphOp, ...] | str] = {}
    for model_format in MODEL_FORMATS:
        try:
            op_lists[model_format] = tuple(list_ops(traced, produced_group, model_format))
        except ToolchainError as e:  # pruning still works; only latency prediction needs the op list
            op_lists[model_format] = str(e)
    return ModelGraph(groups, input_size, op_lists, warnings, _norm_after(traced))


def _check_family(model: nn.Module) -> None:
    """Refuse, before tracing, networks whose width is not made of conv channels: tracing a transformer fails deep
    inside torch.fx or Torch-Pruning, and its heads and tokens are not channel groups."""
    attention = next(
        (
            name
            for name, m in model.named_modules()
            if isinstance(m, nn.MultiheadAttention) or type(m).__name__.endswith("Attention")
        ),
        None,
    )
    if attention is not None:
        raise ToolchainError(
            f"{type(model).__name__} is a transformer ({attention} is an attention layer): toolchain "
            "prunes the channels of convolutional networks; use a CNN such as a MobileNet, "
            "EfficientNet or ResNet"
        )
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise ToolchainError(
            f"{type(model).__name__} has no Conv2d layer: toolchain prunes the channels of "
            "convolutional networks; use a CNN such as a MobileNet, EfficientNet or ResNet"
        )


class _Tracer(fx.Tracer):
    """torch.fx's tracer, keeping every Conv2d, Linear and pooling subclass whole (timm's Linear and Conv2dSame, the
    zoo's TensorFlow-style layers): convs and linears are what channel groups are made of, and tracing into such a
    layer would leave the op list without it."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        leaf = isinstance(m, (nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.MaxPool2d))
        return leaf or super().is_leaf_module(m, module_qualified_name)


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.GraphModule(model, _Tracer().trace(model))
    except Exception as e:
        raise ToolchainError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(e).__name__}: {str(e).splitlines()[0]}): "
            "data-dependent control flow in forward() is not supported"
        ) from None


def _norm_after(traced: fx.GraphModule) -> dict[str, str]:
    """Each conv or linear layer whose output goes to a BatchNorm alone, with that BatchNorm's module name (timm's
    BatchNormAct2d is traced into F.batch_norm, whose running statistics name the module)."""
    out = {}
    for node in traced.graph.nodes:
        if node.op != "call_module" or not isinstance(traced.get_submodule(node.target), (nn.Conv2d, nn.Linear)):
            continue
        users = [u for u in node.users if "tensor_meta" in u.meta]
        if len(users) != 1:
            continue
        user = users[0]
        if user.op == "call_module" and isinstance(traced.get_submodule(user.target), nn.modules.batchnorm._BatchNorm):
            out[str(node.target)] = str(user.target)
        elif (
            user.target is torch.nn.functional.batch_norm
            and isinstance(user.args[1], fx.Node)
            and user.args[1].op == "get_attr"
        ):
            out[str(node.target)] = str(user.args[1].target).rsplit(".", 1)[0]
    return out


def _classifier_name(traced: fx.GraphModule) -> str:
    """The module that produces the network's output (walking back through flatten/dropout-like nodes)."""
    node = next(n for n in traced.graph.nodes if n.op == "output").args[0]
    while isinstance(node, fx.Node):
        if node.op == "call_module" and isinstance(traced.get_submodule(node.target), (nn.Linear, nn.Conv2d)):
            return str(node.target)
        node = node.args[0] if node.args else None
    raise ToolchainError(
        "cannot find the classifier layer (a Linear or Conv2d producing the output): the model must end in one"
    )


def _channel_groups(model: nn.Module, example: torch.Tensor, classifier: str):
    names = {module: name for name, module in model.named_modules()}
    order = {name: i for i, name in enumerate(names.values())}
    try:
        dep_graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        all_groups = list(
            dep_graph.get_all_groups(
                ignored_layers=[model.get_submodule(classifier)], root_module_types=[nn.Conv2d, nn.Linear]
            )
        )
    except Exception as e:
        raise ToolchainError(
            f"cannot find the channel dependencies of {type(model).__name__} ({type(e).__name__}: {e}): "
            "this topology (e.g. a channel shuffle) is not prunable yet"
        ) from None
    found, warnings = [], []
    for group in all_groups:
        grouped = [
            names[i.dep.target.module]
            for i in group.items
            if isinstance(i.dep.target.module, nn.Conv2d)
            and i.dep.target.module.groups > 1
            and not is_depthwise(i.dep.target.module)
        ]
        if grouped:
            warnings.append(
                f"{grouped[0]}: grouped convolution (groups={model.get_submodule(grouped[0]).groups}); "
                "its channels are left unpruned to keep group alignment"
            )
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
                elif not is_depthwise(module):
                    consumers.append(names[module])
        if not producers:
            continue
        producers.sort(key=order.__getitem__)
        lead = next((p for p in producers if not is_depthwise(model.get_submodule(p))), None)
        if lead is None:
            continue  # only depthwise convs: their channels belong to a producer outside the group
        found.append(
            (
                order[lead],
                lead,
                producers,
                sorted(set(consumers), key=order.__getitem__),
                members,
                len(group.items[0].idxs),
            )
        )
    found.sort()
    shapes = _input_shapes(model, example)
    groups, out_group = [], {}
    for index, (_, lead, producers, consumers, members, channels) in enumerate(found):
        module = model.get_submodule(lead)
        for p in producers:
            out_group[p] = index
        h, w = shapes[lead]
        groups.append(
            ChannelGroup(
                index=index,
                channels=channels,
                lead=lead,
                members=tuple(sorted(members, key=order.__getitem__)),
                consumers=tuple(consumers),
                in_channels=module.in_channels if isinstance(module, nn.Conv2d) else module.in_features,
                h=h,
                w=w,
                kernel=module.kernel_size[0] if isinstance(module, nn.Conv2d) else 1,
                stride=module.stride[0] if isinstance(module, nn.Conv2d) else 1,
            )
        )
    return tuple(groups), out_group, tuple(warnings)


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

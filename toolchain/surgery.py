"""Physical channel removal: cutting the channels a pruning policy drops out of a model's weights.

Torch-Pruning's dependency graph does the cutting, so that every layer reading a group's channels (through
concats and the like) loses the same ones.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from .errors import ToolchainError
from .graph import ChannelGroup, ModelGraph
from .lowering import is_depthwise


class ChannelSurgery:
    """Physical channel removal on one model instance, with Torch-Pruning's dependency graph.

    `plan(kept_indices)` records, for every consumer layer, which of its input channels will go (Torch-Pruning maps the
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
            raise ToolchainError(
                f"cannot build channel dependencies of {type(model).__name__} ({type(e).__name__}: {e}): "
                "this topology is not prunable yet"
            ) from None
        self._names = {m: n for n, m in model.named_modules()}
        self._drops: list[tuple[ChannelGroup, list[int]]] = []
        self.dropped_inputs: dict[str, set[int]] = {}

    def _plan_group(self, group: ChannelGroup, drop: list[int]):
        module = self.model.get_submodule(group.lead)
        handler = tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels
        return self._dep_graph.get_pruning_group(module, handler, idxs=drop)

    def plan(self, kept_indices: Sequence[torch.Tensor]) -> None:
        """`kept_indices[g]` holds the indices of the channels group g keeps."""
        for group, kept in zip(self.graph.groups, kept_indices):
            drop = sorted(set(range(group.channels)) - {int(i) for i in kept})
            if not drop:
                continue
            for item in self._plan_group(group, drop).items:
                target = item.dep.target.module
                if (
                    item.dep.handler.__name__ == "prune_in_channels"
                    and isinstance(target, (nn.Conv2d, nn.Linear))
                    and not is_depthwise(target)
                ):
                    self.dropped_inputs.setdefault(self._names[target], set()).update(int(i) for i in item.idxs)
            self._drops.append((group, drop))

    def apply(self) -> nn.Module:
        for group, drop in self._drops:
            self._plan_group(group, drop).prune()
        self._drops = []
        self._dismantle()
        return self.model

    def _dismantle(self) -> None:
        """Torch-Pruning's graph is cyclic (its nodes list each other) and holds its tracing pass's autograd graph,
        activations included: Python's cycle collector frees it only once enough objects were allocated since, and
        a search at 224 px grew by about 60 MB per pruned model until then. Cut, it is freed when the surgery is."""
        for node in self._dep_graph.module2node.values():
            node.inputs.clear()
            node.outputs.clear()
            node.dependencies.clear()
            node.grad_fn = None
        self._dep_graph.module2node.clear()


def pruned_copy(model: nn.Module, graph: ModelGraph, keep: Sequence[int]) -> nn.Module:
    """A copy of `model` with the first `keep[g]` channels of each group: the right shapes, arbitrary weights
    (for measuring a variant's latency, or for loading a pruned checkpoint's weights into)."""
    surgery = ChannelSurgery(copy.deepcopy(model).eval(), graph)
    surgery.plan([torch.arange(k) for k in keep])
    return surgery.apply()

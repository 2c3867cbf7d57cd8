"""The AMC environment: one episode walks the channel groups first to last and picks a keep ratio for each.

It knows only the groups, a cost function (kept channels -> predicted latency in ms), an evaluator (kept
channels -> top-1 accuracy of the pruned model) and the budget; it owns the state features, the action wall and
the reward.

State of group t (16 features, each in [0, 1]): t, n (out channels), c (the lead layer's in channels), h, w,
stride, k, the group's latency at full width, how many layers read and hold its channels, whether a residual add
sums them; then latency already removed by earlier decisions, latency of the groups still to come, the previous
action, the largest keep ratio the wall allows now, and the budget left with every later group at its lower
bound. "Group latency" is the predicted latency of every op that reads or writes the group's channels.

Resource-constrained protocol: the wall clips each action to the largest channel count whose predicted total
stays within budget when every later group is at its lower bound, so every episode ends within budget.
Accuracy-guaranteed protocol: no wall; reward -error * log(latency in microseconds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import ToolchainError, require
from ..graph import ModelGraph
from ..policy import round_channels

Protocol = Literal["resource", "accuracy"]
PROTOCOLS = ("resource", "accuracy")
STATE_SIZE = 16


@dataclass(frozen=True)
class EnvConfig:
    protocol: Protocol = "resource"
    lbound: float = 0.2  # smallest keep ratio per group
    rbound: float = 1.0  # largest keep ratio per group
    multiple: int = 8  # kept channels are rounded to multiples of this
    floor: int = 8  # and never fall below it (or the group's width)

    def __post_init__(self):
        require(self.protocol in PROTOCOLS, f"unknown protocol {self.protocol!r}: use {' or '.join(PROTOCOLS)}")
        require(
            0 < self.lbound <= self.rbound <= 1,
            f"keep-ratio bounds {self.lbound} (--lbound) and {self.rbound} "
            "(--rbound) must satisfy 0 < lbound <= rbound <= 1, e.g. 0.2 and 1.0",
        )
        require(
            self.multiple >= 1 and self.floor >= 1,
            f"channel multiple {self.multiple} and floor {self.floor} must be whole numbers of at least 1, e.g. 8",
        )


@dataclass(frozen=True)
class Episode:
    actions: tuple[float, ...]  # keep ratios actually applied (after the wall and rounding)
    keep: tuple[int, ...]
    states: tuple[tuple[float, ...], ...]
    latency_ms: float
    accuracy: float
    reward: float

    @classmethod
    def from_dict(cls, d: dict) -> Episode:
        return cls(
            tuple(d["actions"]),
            tuple(d["keep"]),
            tuple(tuple(s) for s in d["states"]),
            float(d["latency_ms"]),
            float(d["accuracy"]),
            float(d["reward"]),
        )


def lower_bounds(channels: Sequence[int], config: EnvConfig) -> tuple[int, ...]:
    """Each group's smallest kept count under the settings: its `lbound` share, on the channel grid."""
    return tuple(round_channels(config.lbound, c, config.multiple, config.floor) for c in channels)


class PruningEnv:
    def __init__(
        self,
        graph: ModelGraph,
        budget_ms: float,
        cost: Callable[[Sequence[int]], float],
        evaluate: Callable[[Sequence[int]], float],
        config: EnvConfig = EnvConfig(),
        group_cost: Callable[[Sequence[int]], np.ndarray] | None = None,
    ):
        self.graph, self.budget_ms, self.cost, self.evaluate, self.config = graph, budget_ms, cost, evaluate, config
        self.channels = graph.channels
        self.lower = lower_bounds(self.channels, config)
        self.full_ms = cost(self.channels)
        self.min_ms = cost(self.lower)
        if config.protocol == "resource":
            if budget_ms < self.min_ms:
                raise ToolchainError(
                    f"a {budget_ms:.3f} ms budget is infeasible: the smallest this model gets with every layer at "
                    f"keep ratio {config.lbound} is {self.min_ms:.3f} ms; raise the budget or lower --lbound"
                )
            if budget_ms >= self.full_ms:
                raise ToolchainError(
                    f"the model already runs in {self.full_ms:.3f} ms, within the {budget_ms:.3f} ms budget: "
                    "nothing to prune; pass a smaller --latency-ms or --latency-ratio"
                )
        self.group_ms = self._group_latencies(group_cost)
        self._static = self._static_features()

    def _group_latencies(self, group_cost) -> np.ndarray:
        if group_cost is None:  # without per-op costs, a group's latency is what removing it down to the floor saves
            return np.array(
                [
                    self.full_ms - self.cost(self.channels[:t] + (self.lower[t],) + self.channels[t + 1 :])
                    for t in range(len(self.channels))
                ]
            )
        return np.asarray(group_cost(self.channels), dtype=np.float64)

    def _static_features(self) -> np.ndarray:
        """Per group: position, width, the lead layer's input channels, map size, stride, kernel, latency at full
        width, how many layers read the channels and hold them, and whether a residual add sums them (a group
        of a whole residual stream is nothing like the stem that leads it)."""
        groups = self.graph.groups
        summed = _summed_groups(self.graph)
        raw = np.array(
            [
                [
                    t,
                    g.channels,
                    g.in_channels,
                    g.h,
                    g.w,
                    g.stride,
                    g.kernel,
                    self.group_ms[t],
                    len(g.consumers),
                    len(g.members),
                    float(t in summed),
                ]
                for t, g in enumerate(groups)
            ],
            dtype=np.float64,
        )
        return raw / np.maximum(raw.max(0), 1e-12)

    def state(self, t: int, keep: Sequence[int], prev_action: float, limit: int) -> np.ndarray:
        """Group t's facts, then what the decisions so far did: latency removed, latency still to come, the last
        action, the largest keep ratio the budget allows this group now (`limit` channels), and the budget left
        when every later group shrinks to its lower bound: the agent sees the wall it will meet."""
        current = tuple(keep[:t]) + self.channels[t:]
        reduced = self.full_ms - self.cost(current)  # only decisions already taken; later groups at full width
        rest = float(self.group_ms[t + 1 :].sum())
        total = float(self.group_ms.sum())
        floor_ms = self.cost(tuple(keep[:t]) + self.lower[t:])
        slack = max(0.0, (self.budget_ms - floor_ms) / self.budget_ms) if self.config.protocol == "resource" else 1.0
        dynamic = [reduced / self.full_ms, rest / total, prev_action, limit / self.channels[t], min(1.0, slack)]
        return np.concatenate([self._static[t], dynamic]).astype(np.float32)

    def wall(self, t: int, keep: Sequence[int]) -> int:
        """Largest channel count for group t keeping the budget, with later groups at their lower bound."""
        channels = self.channels[t]
        candidates = sorted(
            {self.lower[t], channels} | set(range(self.lower[t], channels + 1, self.config.multiple)), reverse=True
        )
        head = tuple(keep[:t])
        tail = self.lower[t + 1 :]
        for c in candidates:
            if self.cost(head + (c,) + tail) <= self.budget_ms:
                return c
        return self.lower[t]

    def step_keep(self, t: int, action: float, limit: int) -> int:
        """Turn a keep ratio into a channel count on the grid, at most `limit` (the wall, under the resource
        protocol)."""
        action = float(np.clip(action, self.config.lbound, self.config.rbound))
        kept = max(self.lower[t], round_channels(action, self.channels[t], self.config.multiple, self.config.floor))
        return min(kept, limit)

    def rollout(self, act: Callable[[np.ndarray, int], float]) -> Episode:
        """Run one episode; `act(state, t)` returns a keep ratio for group t."""
        keep: list[int] = []
        states, actions = [], []
        prev = 1.0
        for t in range(len(self.channels)):
            limit = self.wall(t, keep) if self.config.protocol == "resource" else self.channels[t]
            s = self.state(t, keep, prev, limit)
            kept = self.step_keep(t, act(s, t), limit)
            keep.append(kept)
            prev = kept / self.channels[t]
            states.append(tuple(float(x) for x in s))
            actions.append(prev)
        return self.finish(tuple(keep), tuple(actions), tuple(states))

    def finish(self, keep: tuple[int, ...], actions: tuple[float, ...], states: tuple = ()) -> Episode:
        return self.finish_scored(keep, self.evaluate(keep), actions, states)

    def finish_scored(
        self, keep: tuple[int, ...], accuracy: float, actions: tuple[float, ...] | None = None, states: tuple = ()
    ) -> Episode:
        """An episode for `keep` scored with an accuracy measured elsewhere (e.g. on a larger split)."""
        latency = self.cost(keep)
        actions = actions if actions is not None else tuple(k / c for k, c in zip(keep, self.channels))
        return Episode(actions, keep, states, latency, accuracy, self.reward(accuracy, latency))

    def reward(self, accuracy: float, latency_ms: float) -> float:
        error = 1.0 - accuracy
        if self.config.protocol == "resource":
            return -error
        return -error * math.log(latency_ms * 1e3)  # in microseconds, so the log stays positive for any real model


def _summed_groups(graph: ModelGraph) -> set[int]:
    """The groups whose channels a residual add sums (so several layers' outputs share them)."""
    try:
        ops = graph.ops()
    except ToolchainError:  # no op list (a layer without a latency rule): no residual facts either
        return set()
    return {g for op in ops if op.kind == "ADD" for g in op.groups_read}

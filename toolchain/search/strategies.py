"""Search strategies under one interface: each episode proposes a policy, the environment scores it.

`amc` is the DDPG agent; the baselines run in the same harness (same budget, same reward evaluation):
`uniform` (the largest uniform keep ratio that fits), `shallow` / `deep` (linear ramps that prune shallow or deep
layers more, scaled to fit), `random` (random keep ratios through the same action wall) and `torch-pruning`
(Torch-Pruning's global magnitude ranking decides the widths, tuned to the same predicted latency).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch

from ..policy import round_channels
from .ddpg import DDPGAgent, DDPGConfig
from .env import STATE_SIZE, Episode, PruningEnv


class Strategy(Protocol):
    name: str
    deterministic: bool  # one episode is enough

    def episode(self, env: PruningEnv) -> Episode: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class AMC:
    name, deterministic = "amc", False

    def __init__(self, env: PruningEnv, config: DDPGConfig = DDPGConfig(), seed: int = 0):
        self.agent = DDPGAgent(STATE_SIZE, len(env.channels), env.config.lbound, env.config.rbound, config, seed)

    def episode(self, env: PruningEnv) -> Episode:
        episode = env.rollout(lambda state, t: self.agent.act(state, explore=True))
        # the action stored is the one applied (after the wall), as the replay must reflect what was measured
        self.agent.observe([np.array(s, np.float32) for s in episode.states], list(episode.actions), episode.reward)
        return episode

    def state_dict(self) -> dict:
        return self.agent.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.agent.load_state_dict(state)


class RandomSearch:
    name, deterministic = "random", False

    def __init__(self, env: PruningEnv, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def episode(self, env: PruningEnv) -> Episode:
        return env.rollout(lambda state, t: float(self.rng.uniform(env.config.lbound, env.config.rbound)))

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


class _FittedRatios:
    """Keep ratios from a one-parameter family, with the parameter set as high as the budget allows."""

    deterministic = True

    def ratios(self, scale: float, n: int) -> np.ndarray:
        raise NotImplementedError

    def keep(self, env: PruningEnv, scale: float) -> tuple[int, ...]:
        r = np.clip(self.ratios(scale, len(env.channels)), env.config.lbound, env.config.rbound)
        return tuple(
            max(lo, round_channels(float(x), c, env.config.multiple, env.config.floor))
            for x, c, lo in zip(r, env.channels, env.lower)
        )

    def episode(self, env: PruningEnv) -> Episode:
        keep = _largest_fitting(lambda s: self.keep(env, s), env)
        return env.finish(keep, tuple(k / c for k, c in zip(keep, env.channels)))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Uniform(_FittedRatios):
    name = "uniform"

    def ratios(self, scale, n):
        return np.full(n, scale)


class Ramp(_FittedRatios):
    """Keep ratio rising with depth (`shallow`: shallow layers pruned more) or falling (`deep`)."""

    def __init__(self, name: str, slope: float):
        self.name, self.slope = name, slope

    def ratios(self, scale, n):
        depth = np.linspace(-0.5, 0.5, n)
        return scale + self.slope * depth


class TorchPruningMagnitude:
    """Torch-Pruning's MagnitudePruner with global ranking picks how many channels each group keeps."""

    name, deterministic = "torch-pruning", True

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def keep(self, env: PruningEnv, ratio: float) -> tuple[int, ...]:
        import copy

        import torch_pruning as tp

        model = copy.deepcopy(self.model).eval()
        size = env.graph.input_size
        classifier = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]
        pruner = tp.pruner.MagnitudePruner(
            model,
            torch.zeros(1, 3, size, size),
            importance=tp.importance.MagnitudeImportance(p=1),
            global_pruning=True,
            pruning_ratio=ratio,
            ignored_layers=[classifier],
            round_to=env.config.multiple,
        )
        pruner.step()
        kept = []
        for g, lo in zip(env.graph.groups, env.lower):
            module = model.get_submodule(g.lead)
            kept.append(max(lo, module.out_channels if isinstance(module, torch.nn.Conv2d) else module.out_features))
        return tuple(kept)

    def episode(self, env: PruningEnv) -> Episode:
        keep = _largest_fitting(lambda s: self.keep(env, 1.0 - s), env)
        return env.finish(keep, tuple(k / c for k, c in zip(keep, env.channels)))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _largest_fitting(
    keep_for: Callable[[float], Sequence[int]], env: PruningEnv, scan: int = 21, refine: int = 12
) -> tuple[int, ...]:
    """The family member with the highest predicted latency within budget, for a parameter in [0, 1].

    A coarse scan first (a family need not be monotonic: Torch-Pruning's global ranking is not), then bisection
    between the best fitting point and its neighbour above it.
    """
    budget = env.budget_ms
    params = np.linspace(0.0, 1.0, scan)
    keeps = [tuple(keep_for(float(p))) for p in params]
    costs = [env.cost(k) for k in keeps]
    fitting = [i for i, c in enumerate(costs) if c <= budget]
    if not fitting:
        return tuple(env.lower)
    i = max(fitting, key=costs.__getitem__)
    best, best_cost = keeps[i], costs[i]
    if i + 1 < scan:
        lo, hi = params[i], params[i + 1]
        for _ in range(refine):
            mid = (lo + hi) / 2
            keep = tuple(keep_for(float(mid)))
            cost = env.cost(keep)
            if cost <= budget:
                lo = mid
                if cost > best_cost:
                    best, best_cost = keep, cost
            else:
                hi = mid
    return best


STRATEGIES = ("amc", "uniform", "shallow", "deep", "random", "torch-pruning")


def make_strategy(
    name: str, env: PruningEnv, model: torch.nn.Module, seed: int, ddpg: DDPGConfig = DDPGConfig()
) -> Strategy:
    if name == "amc":
        return AMC(env, ddpg, seed)
    if name == "random":
        return RandomSearch(env, seed)
    if name == "uniform":
        return Uniform()
    if name == "shallow":
        return Ramp("shallow", 0.6)
    if name == "deep":
        return Ramp("deep", -0.6)
    if name == "torch-pruning":
        return TorchPruningMagnitude(model)
    raise ValueError(name)

"""DDPG as AMC uses it: actor and critic MLPs (300-300), soft target updates, every transition of an episode given
the episode's final reward, truncated-normal exploration with decaying sigma.

Three settings. `PAPER` is the AMC paper's: sigma 0.5 decayed x0.95 per episode after 100 warm-up episodes, one
update per transition, a 100-episode replay memory. Its noise is below 0.1 by episode 132 and near 0 soon after, and
resnet20's searches then repeat a few policies (156 distinct in 400 episodes). The default learns as the paper does
but never lets sigma fall below 0.1, so the search keeps sampling around what the actor has learned. It is the one
setting ahead of random search and more than 3 points ahead of every rule on resnet20, plain20 and
mobilenet_v2_cifar alike (benchmarks/search.py, 3-5 seeds). `MANY_UPDATES` keeps exploring longer (x0.99) and learns
more from each episode: eight updates per transition and a memory as long as the search. So many updates push the
actor's output far into the flat end of its sigmoid wherever the critic favours wider layers, and there it stays
whatever the critic learns next (mobilenet_v2_cifar: pre-sigmoid outputs of 18-30 for every group, so the actor
asked for every layer whole and the budget wall cut the last ones to their floor, episode after episode); it pulls
them back within `actor_margin`. It leads on resnet20 and trails the default on plain20 and mobilenet_v2_cifar, at
3x the paper's minutes on resnet20. As in the AMC reference code, rewards are stored raw and a moving average of the
sampled batches' means is subtracted when they are learned from.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..errors import require


@dataclass(frozen=True)
class DDPGConfig:
    hidden: int = 300
    lr_actor: float = 1e-4
    lr_critic: float = 1e-3
    tau: float = 0.01
    discount: float = 1.0
    batch_size: int = 64
    buffer_episodes: int = 100
    warmup_episodes: int = 100
    sigma: float = 0.5
    sigma_decay: float = 0.95
    sigma_min: float = 0.1  # exploration never drops below this
    updates_per_step: int = 1  # critic and actor updates per stored transition, after warm-up
    baseline_beta: float = 0.95  # moving average of sampled batch rewards: ma = beta * ma + (1 - beta) * mean
    # the actor's pre-sigmoid output beyond +-margin is pulled back: out there the sigmoid's slope is nil, and an
    # actor pushed past it keeps the same channels whatever the critic learns later (sigmoid(4) = 0.98); None: no pull
    actor_margin: float | None = None

    def __post_init__(self):
        require(
            math.isfinite(self.sigma) and self.sigma >= 0,
            f"exploration noise --sigma {self.sigma} must be a finite number of at least 0, e.g. 0.5",
        )
        require(0 < self.sigma_decay <= 1, f"--sigma-decay {self.sigma_decay} must be in (0, 1], e.g. 0.95")
        require(self.warmup_episodes >= 0, f"--warmup-episodes {self.warmup_episodes} must be 0 or more")
        require(
            min(self.hidden, self.batch_size, self.buffer_episodes, self.updates_per_step) >= 1,
            "DDPG sizes must be at least 1",
        )
        require(0 <= self.sigma_min <= max(self.sigma, 0), f"--sigma-min {self.sigma_min} must be in [0, --sigma]")
        require(
            self.actor_margin is None or self.actor_margin > 0,
            f"actor margin {self.actor_margin} must be above 0, e.g. 4",
        )


PAPER = DDPGConfig(sigma_min=0.0)
MANY_UPDATES = DDPGConfig(buffer_episodes=1000, sigma_decay=0.99, updates_per_step=8, actor_margin=4.0)
PRESETS = {"default": DDPGConfig(), "paper": PAPER, "many-updates": MANY_UPDATES}


def mlp(n_in: int, hidden: int, out_act: nn.Module | None) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Linear(n_in, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 1),
    ]
    return nn.Sequential(*layers, *([out_act] if out_act else []))


class Critic(nn.Module):
    def __init__(self, state_size: int, hidden: int):
        super().__init__()
        self.net = mlp(state_size + 1, hidden, None)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([state, action], 1))


class ReplayBuffer:
    """The last `capacity` transitions (state, action, reward, next state, done), as flat numpy arrays."""

    def __init__(self, capacity: int, state_size: int):
        self.capacity, self.size, self.next = capacity, 0, 0
        self.state = np.zeros((capacity, state_size), np.float32)
        self.action = np.zeros((capacity, 1), np.float32)
        self.reward = np.zeros((capacity, 1), np.float32)
        self.next_state = np.zeros((capacity, state_size), np.float32)
        self.done = np.zeros((capacity, 1), np.float32)

    def add(self, s, a, r, s2, done) -> None:
        i = self.next
        self.state[i], self.action[i], self.reward[i], self.next_state[i], self.done[i] = s, a, r, s2, done
        self.next = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, rng: np.random.Generator):
        idx = rng.integers(0, self.size, n)
        return tuple(
            torch.from_numpy(x[idx]) for x in (self.state, self.action, self.reward, self.next_state, self.done)
        )

    def state_dict(self) -> dict:
        return {
            k: torch.from_numpy(getattr(self, k).copy()) for k in ("state", "action", "reward", "next_state", "done")
        } | {"size": self.size, "next": self.next}

    def load_state_dict(self, d: dict) -> None:
        for k in ("state", "action", "reward", "next_state", "done"):
            getattr(self, k)[:] = d[k].numpy()
        self.size, self.next = int(d["size"]), int(d["next"])


class DDPGAgent:
    def __init__(
        self, state_size: int, steps_per_episode: int, lbound: float, rbound: float, config: DDPGConfig, seed: int = 0
    ):
        self.config, self.lbound, self.rbound = config, lbound, rbound
        torch.manual_seed(seed)
        self.actor = mlp(state_size, config.hidden, nn.Sigmoid())
        self.actor_logits = self.actor[:-1]  # the same layers before the sigmoid, sliced once: updates are many
        self.critic = Critic(state_size, config.hidden)
        self.actor_target, self.critic_target = copy.deepcopy(self.actor), copy.deepcopy(self.critic)
        # A search makes tens of thousands of updates of small networks, where per-tensor overheads count: hence
        # the fused Adam step and the one-call soft update below
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr_actor, fused=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.lr_critic, fused=True)
        self.buffer = ReplayBuffer(config.buffer_episodes * steps_per_episode, state_size)
        self.rng = np.random.default_rng(seed)
        self.sigma = config.sigma
        self.baseline: float | None = None
        self.episodes = 0

    def act(self, state: np.ndarray, explore: bool) -> float:
        """Random during warm-up; then the actor's action plus truncated-normal noise within [lbound, rbound]."""
        if explore and self.episodes < self.config.warmup_episodes:
            return float(self.rng.uniform(self.lbound, self.rbound))
        with torch.no_grad():
            mean = float(self.actor(torch.from_numpy(state)[None])[0, 0])
        if not explore:
            return float(np.clip(mean, self.lbound, self.rbound))
        return self._truncated_normal(mean, self.sigma)

    def _truncated_normal(self, mean: float, sigma: float) -> float:
        for _ in range(100):  # rejection sampling: cheap while the mean lies inside the bounds
            x = self.rng.normal(mean, sigma)
            if self.lbound <= x <= self.rbound:
                return float(x)
        return float(np.clip(mean, self.lbound, self.rbound))

    def observe(self, states: list[np.ndarray], actions: list[float], reward: float) -> None:
        """Store an episode (every transition with its final reward); after warm-up, learn `updates_per_step` times
        per transition and decay the exploration noise towards `sigma_min`."""
        for t, (s, a) in enumerate(zip(states, actions)):
            last = t == len(states) - 1
            self.buffer.add(s, a, reward, states[t] if last else states[t + 1], float(last))
        self.episodes += 1
        if self.episodes > self.config.warmup_episodes:
            for _ in range(len(states) * self.config.updates_per_step):
                self._update()
            self.sigma = max(self.config.sigma_min, self.sigma * self.config.sigma_decay)

    def _update(self) -> None:
        c = self.config
        s, a, r, s2, done = self.buffer.sample(c.batch_size, self.rng)
        mean = float(r.mean())  # the baseline follows what is learned from, not what was just stored
        self.baseline = (
            mean if self.baseline is None else c.baseline_beta * self.baseline + (1 - c.baseline_beta) * mean
        )
        r = r - self.baseline
        with torch.no_grad():
            target = r + c.discount * (1 - done) * self.critic_target(s2, self.actor_target(s2))
        critic_loss = nn.functional.mse_loss(self.critic(s, a), target)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        logits = self.actor_logits(s)
        actor_loss = -self.critic(s, torch.sigmoid(logits)).mean()
        if c.actor_margin is not None:
            actor_loss = actor_loss + torch.relu(logits.abs() - c.actor_margin).square().mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        with torch.no_grad():
            for net, target_net in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
                torch._foreach_lerp_(list(target_net.parameters()), list(net.parameters()), c.tau)

    def state_dict(self) -> dict:
        nets = ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt")
        return {n: getattr(self, n).state_dict() for n in nets} | {
            "buffer": self.buffer.state_dict(),
            "sigma": self.sigma,
            "baseline": self.baseline,
            "episodes": self.episodes,
            "rng": self.rng.bit_generator.state,
            "config": asdict(self.config),
        }

    def load_state_dict(self, d: dict) -> None:
        for n in ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt"):
            getattr(self, n).load_state_dict(d[n])
        self.buffer.load_state_dict(d["buffer"])
        self.sigma, self.baseline, self.episodes = float(d["sigma"]), d["baseline"], int(d["episodes"])
        self.rng.bit_generator.state = d["rng"]

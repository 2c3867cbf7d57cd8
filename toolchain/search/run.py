"""The search loop: episodes of a strategy, logged as they finish, checkpointed so a killed run resumes to the
result it would have reached.

Writes into the run folder (`RunLayout`): `search.csv` (episode, reward, accuracy, predicted latency, the channels
each group kept), and `search_state.pt` (the strategy, e.g. the agent and its replay buffer, with the best episode
so far) every `checkpoint_every` episodes. On resume the log is cut back to the last checkpoint and the run goes on.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from ..errors import ToolchainError
from ..files import atomic_path, write_atomic
from ..layout import RunLayout
from ..schemas import SearchState, parse
from .env import Episode, PruningEnv
from .strategies import Strategy


def run_search(
    env: PruningEnv,
    strategy: Strategy,
    episodes: int,
    out: Path,
    resume: bool = False,
    checkpoint_every: int = 10,
    on_episode: Callable[[int, Episode, Episode], None] | None = None,
) -> Episode:
    """Run `episodes` episodes (one for deterministic strategies) and return the best."""
    out.mkdir(parents=True, exist_ok=True)
    episodes = 1 if strategy.deterministic else episodes
    start, best = 0, None
    state_path, log_path = RunLayout(out).search_state, RunLayout(out).search_log
    if resume and state_path.exists():
        state = _load_state(state_path)
        if state["strategy_name"] != strategy.name:
            raise ToolchainError(
                f"{out} holds a {state['strategy_name']} search, not {strategy.name}: use another --out or the same "
                "--strategy"
            )
        try:
            strategy.load_state_dict(state["strategy"])
            start, best = int(state["episode"]), Episode.from_dict(state["best"]) if state["best"] else None
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ToolchainError(
                f"search state {state_path} does not fit this {strategy.name} search ({type(e).__name__}: "
                f"{str(e)[:100]}): delete it to search from the start, or pass another --out"
            ) from None
        _truncate_log(log_path, start)
    else:
        check_fresh(out, resume)
    if start == 0:
        _write_header(log_path, len(env.channels))
    for i in range(start, episodes):
        episode = strategy.episode(env)
        if best is None or episode.reward > best.reward:
            best = episode
        with open(log_path, "a", newline="") as f:
            csv.writer(f).writerow(
                [i + 1, f"{episode.reward:.6f}", f"{episode.accuracy:.6f}", f"{episode.latency_ms:.6f}", *episode.keep]
            )
        if (i + 1) % checkpoint_every == 0 or i + 1 == episodes:
            _save_state(state_path, strategy, i + 1, best)
        if on_episode:
            on_episode(i + 1, episode, best)
    assert best is not None
    return best


def check_fresh(out: Path, resume: bool) -> None:
    """Refuse to overwrite a finished or killed search unless it is to be resumed."""
    if RunLayout(out).search_log.exists() and not resume:
        raise ToolchainError(f"{out} already holds a search: pass --resume to continue it, or another --out")


def _write_header(path: Path, groups: int) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerow(
            ["episode", "reward", "accuracy", "latency_ms", *(f"keep_{t}" for t in range(groups))]
        )  # channels


def _truncate_log(path: Path, episodes: int) -> None:
    rows = path.read_text().splitlines()[: episodes + 1] if path.exists() else []
    write_atomic(path, "\n".join(rows) + "\n")


def _load_state(path: Path) -> dict:
    fix = f"delete {path} to search from the start in this folder, or pass another --out"
    try:
        blob = torch.load(path, weights_only=True)
    except Exception as e:  # truncated or not a torch file: torch raises several types
        raise ToolchainError(f"search state {path} is corrupt ({type(e).__name__}): {fix}") from None
    return parse(SearchState, blob, f"search state {path}", fix).model_dump()


def _save_state(path: Path, strategy: Strategy, episode: int, best: Episode | None) -> None:
    state = {
        "strategy_name": strategy.name,
        "strategy": strategy.state_dict(),
        "episode": episode,
        "best": asdict(best) if best else None,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_log(out: Path) -> list[dict]:
    with open(RunLayout(out).search_log) as f:
        return list(csv.DictReader(f))


def logged_keep(row: dict, groups: int) -> tuple[int, ...]:
    return tuple(int(row[f"keep_{t}"]) for t in range(groups))


def top_policies(out: Path, groups: int, k: int) -> list[tuple[int, ...]]:
    """The kept-channel vectors of the `k` highest-reward distinct episodes in the search log."""
    chosen: list[tuple[int, ...]] = []
    for row in sorted(read_log(out), key=lambda r: -float(r["reward"])):
        keep = logged_keep(row, groups)
        if keep not in chosen:
            chosen.append(keep)
        if len(chosen) == k:
            break
    return chosen

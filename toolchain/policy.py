"""`PruningPolicy`: how many output channels each channel group keeps. The record that `predict`, `prune`,
`compress` and `export` exchange, as readable JSON with one entry per group:

    {"format": "toolchain-pruning-policy", "version": 1,
     "model": {"arch": "resnet20", "input_size": 32, "fingerprint": "3f2a..."},
     "groups": [{"index": 0, "lead": "stem.0", "channels": 16, "keep": 8, "ratio": 0.5}, ...]}

`fingerprint` identifies the unpruned architecture's channel groups, so a policy made for one model is refused
by another even when the group counts happen to agree.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ToolchainError
from .files import write_atomic
from .graph import ModelGraph
from .schemas import PolicyFile, parse

FORMAT = "toolchain-pruning-policy"
FORMAT_VERSION = 1


def graph_fingerprint(graph: ModelGraph) -> str:
    raw = "|".join(f"{g.lead}:{g.channels}" for g in graph.groups) + f"|{graph.input_size}"
    return hashlib.sha1(raw.encode()).hexdigest()[:12]


def round_channels(ratio: float, channels: int, multiple: int = 8, floor: int = 8) -> int:
    """Kept channel count for a keep ratio: rounded to `multiple`, never below `floor` (or the layer's width). A
    ratio of 1 keeps the whole layer, also when its width is not a multiple (16 channels on a grid of 64)."""
    if ratio >= 1:
        return channels
    kept = int(round(ratio * channels / multiple)) * multiple
    return max(min(floor, channels), min(channels, kept))


@dataclass(frozen=True)
class PruningPolicy:
    arch: str
    input_size: int
    fingerprint: str
    leads: tuple[str, ...]
    channels: tuple[int, ...]
    keep: tuple[int, ...]
    ratios: tuple[float, ...]

    @classmethod
    def from_keep(
        cls, graph: ModelGraph, arch: str, keep: Sequence[int], ratios: Sequence[float] | None = None
    ) -> PruningPolicy:
        channels = graph.channels
        ratios = tuple(ratios) if ratios is not None else tuple(k / c for k, c in zip(keep, channels))
        return cls(
            arch,
            graph.input_size,
            graph_fingerprint(graph),
            tuple(g.lead for g in graph.groups),
            channels,
            tuple(int(k) for k in keep),
            tuple(float(r) for r in ratios),
        )

    @classmethod
    def uniform(cls, graph: ModelGraph, arch: str, ratio: float, multiple: int = 8, floor: int = 8) -> PruningPolicy:
        keep = [round_channels(ratio, g.channels, multiple, floor) for g in graph.groups]
        return cls.from_keep(graph, arch, keep, [ratio] * len(keep))

    def validate(self, graph: ModelGraph) -> None:
        if len(self.keep) != len(graph.groups):
            raise ToolchainError(
                f"this policy was made for {self.arch} ({len(self.keep)} channel groups) and does not fit this "
                f"model ({len(graph.groups)} groups): make a policy for this model"
            )
        mine = list(zip(self.leads, self.channels))
        theirs = [(g.lead, g.channels) for g in graph.groups]
        if mine != theirs or self.fingerprint != graph_fingerprint(graph):
            differ = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), None)
            where = (
                f"group {differ} is {mine[differ][0]} with {mine[differ][1]} channels in the policy, "
                f"{theirs[differ][0]} with {theirs[differ][1]} in this model"
                if differ is not None
                else f"it was made at input size {self.input_size}"
            )
            raise ToolchainError(
                f"this policy was made for another {self.arch} ({where}): make a policy for this model"
            )
        for g, k in zip(graph.groups, self.keep):
            if not 1 <= k <= g.channels:
                raise ToolchainError(
                    f"policy keeps {k} channels of group {g.index} ({g.lead}), which has {g.channels}: use "
                    f"1..{g.channels}"
                )

    def to_json(self) -> str:
        groups = [
            {"index": i, "lead": lead, "channels": c, "keep": k, "ratio": round(r, 6)}
            for i, (lead, c, k, r) in enumerate(zip(self.leads, self.channels, self.keep, self.ratios))
        ]
        head = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": {"arch": self.arch, "input_size": self.input_size, "fingerprint": self.fingerprint},
        }
        body = ",\n".join("  " + json.dumps(g) for g in groups)
        return json.dumps(head)[:-1] + ',\n "groups": [\n' + body + "\n ]}\n"

    def to_dict(self) -> dict:
        return json.loads(self.to_json())

    @classmethod
    def from_dict(cls, blob: object, source: str = "policy") -> PruningPolicy:
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise ToolchainError(
                f"{source} is not a toolchain pruning policy: pass a file written by toolchain, or uniform:RATIO"
            )
        record = parse(PolicyFile, blob, source, "re-create it with toolchain, or fix that field")
        groups = sorted(record.groups, key=lambda g: g.index)
        if [g.index for g in groups] != list(range(len(groups))):
            raise ToolchainError(
                f"{source} numbers its groups {[g.index for g in groups]}, not 0..{len(groups) - 1}: "
                "re-create it with toolchain"
            )
        m = record.model
        return cls(
            m.arch,
            m.input_size,
            m.fingerprint,
            tuple(g.lead for g in groups),
            tuple(g.channels for g in groups),
            tuple(g.keep for g in groups),
            tuple(g.ratio if g.ratio is not None else g.keep / g.channels for g in groups),
        )

    def save(self, path: str | Path) -> None:
        write_atomic(Path(path), self.to_json())


def load_policy(spec: str, graph: ModelGraph, arch: str, multiple: int = 8, floor: int = 8) -> PruningPolicy:
    """A POLICY argument: a JSON file, or `uniform:R` (every group keeps ratio R)."""
    if spec.startswith("uniform:"):
        try:
            ratio = float(spec.split(":", 1)[1])
        except ValueError:
            ratio = math.nan
        if not 0 < ratio <= 1:
            raise ToolchainError(f"bad policy {spec!r}: uniform:R needs 0 < R <= 1, e.g. uniform:0.5")
        return PruningPolicy.uniform(graph, arch, ratio, multiple, floor)
    path = Path(spec)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ToolchainError(f"policy file {path} {what}: pass a policy JSON or uniform:RATIO")
    try:
        blob = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise ToolchainError(
            f"policy file {path} is not text (a checkpoint?): pass a policy JSON, e.g. a run's "
            "best_policy.json, or uniform:RATIO"
        ) from None
    except json.JSONDecodeError as e:
        raise ToolchainError(f"policy file {path} is not valid JSON (line {e.lineno}: {e.msg})") from None
    policy = PruningPolicy.from_dict(blob, str(path))
    policy.validate(graph)
    return policy

"""Self-describing checkpoints and the MODEL argument every command takes.

A checkpoint is a plain dict of strings, numbers, lists and tensors, so `torch.load(weights_only=True)` reads it
and nothing is ever unpickled: the architecture is rebuilt from its registry name and constructor arguments, then
the weights are loaded with every key and shape checked.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import CIFAR10_CLASSES, CIFAR10_MEAN
from ..errors import ToolchainError
from ..files import atomic_path
from ..schemas import CheckpointFile, parse
from ._registry import arch_defaults, create_model, is_known_arch, is_zoo_model, takes_num_classes
from .weights import head_size, load_weights, read_weights

FORMAT = "toolchain-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a network and feed it: what data loading, export and the app sidecar read."""

    arch: str
    kwargs: dict[str, Any]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classes: tuple[str, ...]
    policy: dict[str, Any] | None = None  # the pruning policy already applied, if any

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def with_classes(self, classes: tuple[str, ...]) -> ModelSpec:
        return replace(self, classes=tuple(classes))

    def match_classes(self, data_classes: Sequence[str], source: str) -> ModelSpec:
        """The spec to use on data labelled with `data_classes` (its class folders, in sorted order). A new model's
        placeholder names give way to the data's; a trained model's must be the data's, in the same order, or
        every label would be scored against the wrong output."""
        data_classes = tuple(data_classes)
        if data_classes == self.classes:
            return self
        if len(data_classes) != len(self.classes):
            raise ToolchainError(
                f"model {source} predicts {len(self.classes)} classes but the data has {len(data_classes)}: "
                f"use data with the model's classes, or train a new model with --num-classes {len(data_classes)}"
            )
        if self.classes == _numbered(len(self.classes)):
            return self.with_classes(data_classes)
        differ = next(i for i, (a, b) in enumerate(zip(self.classes, data_classes)) if a != b)
        raise ToolchainError(
            f"model {source} was trained with class {differ} = {self.classes[differ]!r} but the data's "
            f"class folder {differ} is {data_classes[differ]!r}: name the data's class folders as the "
            "model's classes (they are sorted by name), or train the model on this data"
        )


@dataclass(frozen=True)
class ModelSource:
    """What a MODEL argument and its options name: a zoo name, `torchvision:NAME`, `timm:NAME`,
    `package.module:factory` or a toolchain checkpoint, and for a network built here its weights file, constructor
    arguments, head, input size and normalisation (each left None takes the architecture's or the weights')."""

    ref: str
    num_classes: int | None = None
    input_size: int | None = None
    weights: Path | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __post_init__(self):
        if not self.ref.strip():
            raise ToolchainError(
                "--model is empty: pass a zoo name (e.g. resnet20), torchvision:NAME, timm:NAME, "
                "package.module:factory or a checkpoint file"
            )
        if self.num_classes is not None and self.num_classes < 1:
            raise ToolchainError(f"--num-classes {self.num_classes} must be at least 1")
        if self.input_size is not None and not 8 <= self.input_size <= 2048:
            raise ToolchainError(f"--input-size {self.input_size} is out of range: use 8 to 2048 pixels, e.g. 224")
        for name, values in (("--mean", self.mean), ("--std", self.std)):
            if values is not None and (len(values) != 3 or not all(math.isfinite(v) for v in values)):
                raise ToolchainError(
                    f"{name} {values} must be three numbers, one per RGB channel, e.g. 0.485,0.456,0.406"
                )
        if self.std is not None and min(self.std) <= 0:
            raise ToolchainError(f"--std {self.std} must be positive: it divides each channel")

    @property
    def is_checkpoint(self) -> bool:
        ref = self.ref
        return not is_known_arch(ref) and (
            ref.endswith((".pt", ".pth", ".ckpt")) or os.sep in ref or Path(ref).exists()
        )

    @property
    def name(self) -> str:
        """A short name for file names and messages: the checkpoint's stem, or the architecture."""
        return Path(self.ref).stem if self.is_checkpoint else re.sub(r"[^\w.-]+", "_", self.ref)


@dataclass
class LoadedModel:
    model: nn.Module
    spec: ModelSpec
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. {"top1_test": 0.91}, as recorded at save time
    source: str = ""


def default_spec(
    arch: str,
    num_classes: int | None = None,
    input_size: int | None = None,
    model_args: dict[str, Any] | None = None,
    mean=None,
    std=None,
) -> ModelSpec:
    """The spec of a fresh network: the architecture's conventions (`arch_defaults`) unless options say otherwise.
    Class names are placeholders until data names them (CIFAR-10's for a 10-class zoo model)."""
    defaults = arch_defaults(arch)
    count = num_classes or defaults.num_classes
    classes = CIFAR10_CLASSES if defaults.mean == CIFAR10_MEAN and count == 10 else _numbered(count)
    kwargs = {**(model_args or {}), **({"num_classes": count} if takes_num_classes(arch) else {})}
    return ModelSpec(
        arch,
        kwargs,
        input_size or defaults.input_size,
        tuple(mean or defaults.mean),
        tuple(std or defaults.std),
        classes,
    )


def _numbered(n: int) -> tuple[str, ...]:
    return tuple(f"class_{i}" for i in range(n))


def build(spec: ModelSpec, source: str = "") -> nn.Module:
    """The untrained network a spec describes (its architecture and constructor arguments)."""
    try:
        return create_model(spec.arch, **spec.kwargs)
    except TypeError as e:  # constructor arguments the architecture does not take
        raise ToolchainError(
            f"{source or spec.arch}: {spec.arch} cannot be built with {spec.kwargs} ({e}): the file "
            "is from another version or was edited; re-create it"
        ) from None


def save_checkpoint(path: str | Path, model: nn.Module, spec: ModelSpec, metrics: dict[str, Any] | None = None) -> None:
    """Write atomically (temp file + rename), so an interrupted save never leaves a truncated checkpoint."""
    blob = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "spec": {**asdict(spec), "mean": list(spec.mean), "std": list(spec.std), "classes": list(spec.classes)},
        "metrics": metrics or {},
        "state_dict": {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()},
    }
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(blob, tmp)
    except OSError as e:
        raise ToolchainError(f"cannot write checkpoint {path} ({e.strerror}): choose a writable --out path") from None


def load_checkpoint(path: str | Path) -> LoadedModel:
    path = Path(path)
    if not path.is_file():
        raise ToolchainError(
            f"checkpoint {path} {'is a folder' if path.is_dir() else 'does not exist'}: pass a zoo name, "
            "torchvision:NAME, or a .pt file written by toolchain"
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ToolchainError(
            f"checkpoint {path} is corrupt or not a torch file ({type(e).__name__}): re-create it with `toolchain "
            "train`"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ToolchainError(
            f"{path} is not a toolchain checkpoint: load it into a model and save it with toolchain, or train one with "
            "`toolchain train`"
        )
    if blob.get("version") != FORMAT_VERSION:
        raise ToolchainError(
            f"{path} has checkpoint format version {blob.get('version')}, this toolchain reads {FORMAT_VERSION}: "
            "upgrade toolchain"
        )
    record = parse(
        CheckpointFile, blob, f"checkpoint {path}", "re-create it with `toolchain train` or `toolchain prune`"
    )
    s = record.spec
    spec = ModelSpec(s.arch, dict(s.kwargs), s.input_size, tuple(s.mean), tuple(s.std), tuple(s.classes), s.policy)
    model = build(spec, str(path))
    if spec.policy is not None:
        model = _shrink(model, spec)
    load_weights(model, record.state_dict, f"checkpoint {path}", spec.arch, "it is corrupt or from another version")
    return LoadedModel(model.eval(), spec, dict(record.metrics), str(path))


def _shrink(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """Replay the recorded pruning policy on the dense architecture, so the pruned weights fit."""
    from ..graph import analyze
    from ..policy import PruningPolicy
    from ..surgery import pruned_copy

    graph = analyze(model, spec.input_size)
    policy = PruningPolicy.from_dict(spec.policy or {}, "the checkpoint's pruning policy")
    policy.validate(graph)
    return pruned_copy(model, graph, policy.keep)


def zoo_checkpoint(arch: str) -> Path:
    return CHECKPOINT_DIR / f"{arch}.pt"


def load(source: ModelSource, pretrained: bool = True, init_seed: int = 0) -> LoadedModel:
    """Resolve a MODEL argument and its options: a toolchain checkpoint; a zoo name (its committed trained checkpoint
    when there is one, `pretrained` is set and nothing else is asked for); or an architecture built here, with the
    weights of `source.weights` when given (their head size wins over the architecture's default; a
    `--num-classes` that disagrees with them is refused). Without weights, the network's initial weights are drawn
    from `init_seed`: the same untrained network each time, so that a resumed run goes on with the model it began
    with."""
    ref = source.ref
    if source.is_checkpoint:
        if source.weights or source.model_args:
            raise ToolchainError(
                f"{ref} is a toolchain checkpoint: it carries its weights and constructor arguments, "
                "so drop --weights and --model-args"
            )
        return load_checkpoint(ref)
    overrides = (
        source.num_classes not in (None, 10)
        or source.input_size not in (None, 32)
        or source.weights
        or source.model_args
        or source.mean
        or source.std
    )
    if pretrained and is_zoo_model(ref) and zoo_checkpoint(ref).is_file() and not overrides:
        return load_checkpoint(zoo_checkpoint(ref))
    spec = default_spec(ref, source.num_classes, source.input_size, source.model_args, source.mean, source.std)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = build(spec)
    if source.weights is None:
        return LoadedModel(model.eval(), spec, {}, ref)
    state = read_weights(Path(source.weights))
    trained_for = head_size(model, state)
    if trained_for is not None and takes_num_classes(ref):
        if source.num_classes is not None and source.num_classes != trained_for:
            raise ToolchainError(
                f"--num-classes {source.num_classes} disagrees with {source.weights}, whose classifier "
                f"has {trained_for} outputs: drop --num-classes, or pass the weights of a "
                f"{source.num_classes}-class model"
            )
        spec = default_spec(ref, trained_for, source.input_size, source.model_args, source.mean, source.std)
        model = build(spec)
    load_weights(model, state, f"weights {source.weights}", ref)
    return LoadedModel(model.eval(), spec, {"weights": str(source.weights)}, ref)


def load_model(
    ref: str, num_classes: int | None = None, input_size: int | None = None, pretrained: bool = True
) -> LoadedModel:
    """`load` for a MODEL argument without weights or other options (tests, benchmarks)."""
    return load(ModelSource(ref, num_classes, input_size), pretrained)

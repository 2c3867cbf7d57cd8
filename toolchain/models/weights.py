"""Weights files as people save them: `torch.save(model.state_dict(), "model.pth")`, the usual wrappers around that
dict, or safetensors. Loaded with `weights_only`, so nothing in them is ever unpickled; a whole pickled model or a
TorchScript archive is refused with the recipe to save a state_dict instead."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from ..errors import ToolchainError

# Keys under which training scripts nest the state_dict (timm, Lightning, many repositories).
WRAPPERS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "net")
# Prefixes that wrappers add to every key: DataParallel / DistributedDataParallel, torch.compile.
PREFIXES = ("module.", "_orig_mod.")
SAVE_RECIPE = "save the weights with torch.save(model.state_dict(), 'weights.pth') and pass that file"


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The state_dict in `path`: unwrapped from {"state_dict": ...}-style dicts, with DataParallel's `module.` and
    torch.compile's `_orig_mod.` prefixes removed."""
    if not path.is_file():
        raise ToolchainError(f"weights {path} {'is a folder' if path.is_dir() else 'does not exist'}: {SAVE_RECIPE}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return _unprefixed(load_file(str(path)))
        except Exception as e:  # safetensors raises its own error types
            raise ToolchainError(f"weights {path} are not a readable safetensors file ({e}): {SAVE_RECIPE}") from None
    if _is_torchscript(path):
        raise ToolchainError(
            f"{path} is a TorchScript archive, not weights: load it with torch.jit.load, then {SAVE_RECIPE}"
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an unpickling refusal (a whole model) or a damaged file
        if "weights_only" in str(e) or "GLOBAL" in str(e):
            raise ToolchainError(
                f"{path} holds a whole pickled model, which toolchain never unpickles: {SAVE_RECIPE}"
            ) from None
        raise ToolchainError(f"weights {path} cannot be read ({type(e).__name__}): {SAVE_RECIPE}") from None
    for key in WRAPPERS:
        if isinstance(blob, dict) and isinstance(blob.get(key), dict) and not _is_state(blob):
            blob = blob[key]
            break
    if not isinstance(blob, dict) or not blob or not _is_state(blob):
        raise ToolchainError(f"{path} is not a state_dict (a dict of tensors): {SAVE_RECIPE}")
    return _unprefixed(blob)


def _is_state(blob: dict) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in blob.items())


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/")[1:2] == ["code"] or name.endswith("/constants.pkl") for name in archive.namelist())


def _unprefixed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def head_size(model: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    """The class count the weights were trained for, when they differ from `model` only in the classifier's
    output rows (its weight's and bias's first dimension); None when they agree with `model` already."""
    expected = model.state_dict()
    differing = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if not differing:
        return None
    layers = {k.rsplit(".", 1)[0] for k in differing}
    rows = {state[k].shape[0] for k in differing}
    if len(layers) == 1 and len(rows) == 1 and all(state[k].shape[1:] == expected[k].shape[1:] for k in differing):
        return rows.pop()
    return None


def load_weights(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    arch: str,
    fix: str = "pass the architecture (and --model-args) they were trained with",
) -> None:
    """Copy `state` into `model`, every key and shape checked, with one line naming what does not fit. Modules
    that version their state (torchvision's MNASNet) read it from the state_dict's metadata, which a plain dict
    lacks: the freshly built model's is the right one."""
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing[:3])}" if missing else "",
                f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
                f"{wrong[0]} is {tuple(state[wrong[0]].shape)} there, {tuple(expected[wrong[0]].shape)} in {arch}"
                if wrong
                else "",
            )
            if part
        )
        raise ToolchainError(f"{source} does not fit {arch} ({detail}): {fix}")
    with_metadata = type(expected)(state)
    with_metadata._metadata = getattr(expected, "_metadata", None)  # type: ignore[attr-defined]
    model.load_state_dict(with_metadata)

"""The model registry: one door (`create_model`) for zoo architectures and torchvision classifiers."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import ToolchainError

TORCHVISION_PREFIX = "torchvision:"

_ZOO: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Add a zoo architecture under its function name."""
    _ZOO[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_ZOO)


def is_zoo_model(arch: str) -> bool:
    return arch in _ZOO


def zoo_description(arch: str) -> str:
    return (_ZOO[arch].__doc__ or "").strip().splitlines()[0]


def torchvision_classifiers() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def create_model(arch: str, **kwargs) -> nn.Module:
    """Build an untrained network: a zoo name (`resnet20`) or a torchvision classifier (`torchvision:mobilenet_v2`)."""
    if arch in _ZOO:
        return _ZOO[arch](**kwargs)
    if arch.startswith(TORCHVISION_PREFIX):
        import torchvision

        name = arch[len(TORCHVISION_PREFIX) :]
        if name not in torchvision_classifiers():
            raise ToolchainError(
                f"unknown torchvision classifier {name!r}: use one of torchvision.models.list_models(), e.g. "
                "torchvision:mobilenet_v2, torchvision:resnet18"
            )
        return torchvision.models.get_model(name, weights=None, **kwargs)  # never downloads weights
    raise ToolchainError(
        f"unknown model {arch!r}: use a zoo name ({', '.join(list_models())}), torchvision:NAME, "
        "or a checkpoint file written by toolchain"
    )

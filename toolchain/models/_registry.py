"""The model registry: one door (`create_model`) for every architecture a MODEL argument can name.

  * a zoo name (`resnet20`, `mobilenet_v1`), registered here with `register_model` and its input conventions;
  * `torchvision:NAME`, any torchvision classifier;
  * `timm:NAME`, any timm model (where mobile users' MobileNetV3, EfficientNet-Lite, MobileOne and FBNet live);
  * `package.module:factory`, the user's own nn.Module class or factory function, imported from the current
    folder or PYTHONPATH.

Every network is built untrained (nothing is downloaded); weights come from a checkpoint or a `--weights` file.
`arch_defaults` gives each architecture's input size, normalisation and class count when no option or weights say
otherwise: the registry's for the zoo, the pretrained config for timm, ImageNet's for torchvision and own modules.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..data import CIFAR10_MEAN, CIFAR10_STD
from ..errors import ToolchainError

TORCHVISION_PREFIX = "torchvision:"
TIMM_PREFIX = "timm:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class ArchDefaults:
    """How an architecture is fed when nothing else says: input side, normalisation, classes."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int


CIFAR = ArchDefaults(32, CIFAR10_MEAN, CIFAR10_STD, 10)
IMAGENET = ArchDefaults(224, IMAGENET_MEAN, IMAGENET_STD, 1000)

_ZOO: dict[str, tuple[Callable[..., nn.Module], ArchDefaults]] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, defaults: ArchDefaults = CIFAR):
    """Add a zoo architecture under its function name (`@register_model`, or `@register_model(defaults=IMAGENET)`)."""

    def register(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _ZOO[f.__name__] = (f, defaults)
        return f

    return register(fn) if fn is not None else register


def list_models() -> list[str]:
    return sorted(_ZOO)


def is_zoo_model(arch: str) -> bool:
    return arch in _ZOO


def zoo_description(arch: str) -> str:
    return (_ZOO[arch][0].__doc__ or "").strip().splitlines()[0]


def is_known_arch(ref: str) -> bool:
    """Whether a MODEL argument names an architecture (rather than a checkpoint file)."""
    return ref in _ZOO or ref.startswith((TORCHVISION_PREFIX, TIMM_PREFIX)) or is_factory(ref)


def is_factory(arch: str) -> bool:
    """`package.module:factory`: the user's own code."""
    return bool(_FACTORY.match(arch)) and not arch.startswith((TORCHVISION_PREFIX, TIMM_PREFIX))


def arch_defaults(arch: str) -> ArchDefaults:
    if arch in _ZOO:
        return _ZOO[arch][1]
    if arch.startswith(TIMM_PREFIX):
        import timm

        cfg = timm.get_pretrained_cfg(arch[len(TIMM_PREFIX) :])
        if cfg is not None:
            return ArchDefaults(int(cfg.input_size[-1]), tuple(cfg.mean), tuple(cfg.std), int(cfg.num_classes or 1000))
    return IMAGENET


def takes_num_classes(arch: str) -> bool:
    """Whether the architecture's head size is set with `num_classes=` (an own factory may not take it)."""
    if not is_factory(arch):
        return True
    return "num_classes" in inspect.signature(_import_factory(arch)).parameters


def create_model(arch: str, **kwargs) -> nn.Module:
    """Build an untrained network (see the module docstring for the names it takes)."""
    if arch in _ZOO:
        return _ZOO[arch][0](**kwargs)
    if arch.startswith(TORCHVISION_PREFIX):
        import torchvision

        name = arch[len(TORCHVISION_PREFIX) :]
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ToolchainError(
                f"unknown torchvision classifier {name!r}: use one of torchvision.models.list_models(), "
                "e.g. torchvision:mobilenet_v2, torchvision:resnet18"
            )
        return torchvision.models.get_model(name, weights=None, **kwargs)  # never downloads weights
    if arch.startswith(TIMM_PREFIX):
        import timm

        name = arch[len(TIMM_PREFIX) :]
        if not timm.is_model(name):
            raise ToolchainError(
                f"unknown timm model {name!r}: use one of timm.list_models(), e.g. "
                "timm:mobilenetv3_small_100, timm:efficientnet_lite0"
            )
        return timm.create_model(name, pretrained=False, **kwargs)
    if is_factory(arch):
        factory = _import_factory(arch)
        try:
            model = factory(**kwargs)
        except TypeError as e:
            raise ToolchainError(
                f"{arch} does not take the arguments {kwargs} ({e}): pass the ones it takes with "
                "--model-args '{\"name\": value}'"
            ) from None
        if not isinstance(model, nn.Module):
            raise ToolchainError(
                f"{arch} returned a {type(model).__name__}, not a torch.nn.Module: name a module class "
                "or a function that builds one"
            )
        return model
    raise ToolchainError(
        f"unknown model {arch!r}: use a zoo name ({', '.join(list_models())}), torchvision:NAME, "
        "timm:NAME, package.module:factory, or a checkpoint file written by toolchain"
    )


def _import_factory(arch: str) -> Callable[..., nn.Module]:
    module_name, attr = arch.split(":")
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # the user's own code in the folder they run from, as `python -m` would
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ToolchainError(
            f"cannot import {module_name} for {arch} ({e}): run from the folder that holds it, or add "
            "that folder to PYTHONPATH"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ToolchainError(f"{module_name} has no class or function {attr!r}: name one that builds the model")
    return factory

"""Model zoo, torchvision adapter and self-describing checkpoints."""

from . import cifar, imagenet  # noqa: F401  (register the zoo architectures)
from ._registry import arch_defaults, create_model, list_models, register_model, zoo_description
from ._stats import count_macs, count_params
from .checkpoint import (
    LoadedModel,
    ModelSource,
    ModelSpec,
    default_spec,
    load,
    load_checkpoint,
    load_model,
    save_checkpoint,
    zoo_checkpoint,
)

__all__ = [
    "LoadedModel",
    "arch_defaults",
    "ModelSource",
    "ModelSpec",
    "count_macs",
    "count_params",
    "create_model",
    "default_spec",
    "describe_zoo",
    "list_models",
    "load",
    "load_checkpoint",
    "load_model",
    "register_model",
    "save_checkpoint",
    "zoo_checkpoint",
    "zoo_description",
]


def describe_zoo() -> list[dict]:
    """One row per zoo architecture: whether a trained checkpoint ships, its test top-1, parameters, MACs."""
    rows = []
    for name in list_models():
        loaded = load_model(name)
        rows.append(
            {
                "name": name,
                "checkpoint": zoo_checkpoint(name).is_file(),
                "top1_test": loaded.metrics.get("top1_test"),
                "params": count_params(loaded.model),
                "macs": count_macs(loaded.model, loaded.spec.input_size),
                "input_size": loaded.spec.input_size,
                "description": zoo_description(name),
            }
        )
    return rows

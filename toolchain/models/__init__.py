"""Model zoo, torchvision adapter and self-describing checkpoints."""

from . import cifar  # noqa: F401  (registers the zoo architectures)
from ._registry import create_model, list_models, register_model, zoo_description
from ._stats import count_macs, count_params
from .checkpoint import LoadedModel, ModelSpec, default_spec, load_checkpoint, load_model, save_checkpoint, zoo_checkpoint

__all__ = [
    "LoadedModel", "ModelSpec", "count_macs", "count_params", "create_model", "default_spec", "list_models",
    "load_checkpoint", "load_model", "register_model", "save_checkpoint", "zoo_checkpoint", "zoo_description",
]

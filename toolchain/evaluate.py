"""Top-1 accuracy of a classifier on an image set: what the search's reward, training's validation and every
reported accuracy are made of."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .data import ImageSet, Split, inference_images_per_pass, load_split, normalize
from .errors import ToolchainError
from .models import ModelSource, ModelSpec, load


@torch.no_grad()
def evaluate(model: nn.Module, spec: ModelSpec, data: ImageSet, batch_size: int | None = None) -> float:
    """Top-1 accuracy in [0, 1], `batch_size` images per pass (default: what suits the model's input size)."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for images, labels in data.batches(batch_size or inference_images_per_pass(spec.input_size)):
        x = normalize(images, spec.mean, spec.std).to(device).contiguous(memory_format=torch.channels_last)
        correct += (model(x).argmax(1).cpu() == labels).sum().item()
    return correct / max(1, len(data))


@dataclass(frozen=True)
class EvalOutcome:
    top1: float
    images: int
    split: str


def evaluate_model(
    source: ModelSource, data: str, split: Split = "test", limit: int | None = None, batch_size: int | None = None
) -> EvalOutcome:
    """Top-1 of a MODEL on a split of DATA (a fixed random `limit` of it, if given)."""
    if batch_size is not None and batch_size < 1:
        raise ToolchainError(f"--batch-size {batch_size} must be at least 1, or left out to fit the input size")
    loaded = load(source)
    images = load_split(data, split, loaded.spec.input_size, limit)
    spec = loaded.spec.match_classes(images.classes, source.ref)
    return EvalOutcome(evaluate(loaded.model, spec, images, batch_size), len(images), split)

"""AMC's channel pruning: which channels each group keeps, and how the layers that read them are rebuilt.

Selection: a group keeps the channels whose reading weights have the largest L1 norm, summed over every layer
that reads the group (the magnitude criterion of AMC).

Reconstruction: each layer that loses input channels is refitted by least squares so that, on feature maps of
the original model, its outputs match the original outputs. With X the layer's input patches (im2col rows at
sampled positions, so any k x k kernel works) and Y = X W^T the original outputs, the refit on the kept columns S
is W_S' = (X_S^T X_S)^-1 X_S^T X W^T: it only needs the Gram matrix G = X^T X, which `FeatureCache` collects
once per model (AMC samples ~10 positions per image over a few thousand training images). Evaluating another
policy then costs a few small linear solves and no forward passes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .data import FEATURES_AT_32PX, images_per_pass, load_split, normalize
from .errors import ToolchainError
from .graph import ModelGraph, analyze
from .models import ModelSource, count_macs, count_params, load, save_checkpoint
from .policy import PruningPolicy, load_policy
from .surgery import ChannelSurgery

RIDGE = 1e-5  # relative Tikhonov term: keeps the solve stable when sampled features are nearly collinear


@dataclass
class FeatureCache:
    """Per consumer layer, the Gram matrix of its input patches (plus a ones column when it has a bias)."""

    gram: dict[str, torch.Tensor]
    rows: int


def consumers(graph: ModelGraph) -> list[str]:
    return sorted({name for g in graph.groups for name in g.consumers})


@torch.no_grad()
def collect_features(
    model: nn.Module, graph: ModelGraph, batches: Iterable[torch.Tensor], points_per_image: int = 10, seed: int = 0
) -> FeatureCache:
    """Accumulate, for every layer that reads a prunable group, the Gram matrix of its input patches at
    `points_per_image` random output positions per image. `batches` are normalised (B, 3, H, W) images."""
    model = model.eval()
    generator = torch.Generator().manual_seed(seed)
    gram: dict[str, torch.Tensor] = {}
    hooks = []
    for name in consumers(graph):
        module = model.get_submodule(name)

        def hook(m, inputs, name=name):
            x = _patches(m, inputs[0], points_per_image, generator)  # (rows, D)
            g = (x.T @ x).double()  # float32 product, float64 running sum
            gram[name] = gram[name] + g if name in gram else g

        hooks.append(module.register_forward_pre_hook(hook))
    rows = 0
    try:
        for images in batches:
            model(images)
            rows += len(images)
    finally:
        for h in hooks:
            h.remove()
    return FeatureCache(gram, rows)


def _patches(module: nn.Module, x: torch.Tensor, points: int, generator: torch.Generator) -> torch.Tensor:
    """Input rows as the layer's weight sees them, then a 1: (N * points, C_in * kh * kw + 1), at `points` random
    output positions per image, with the layer's own padding, stride and dilation."""
    if isinstance(module, nn.Linear):
        rows = x.reshape(-1, x.shape[-1])
    else:
        (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
        xp = nn.functional.pad(x, _padding(module, x))
        n, c, hp, wp = xp.shape
        oh, ow = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
        ys = torch.randint(0, oh, (n, points), generator=generator) * sh  # top-left corners in the padded input
        xs = torch.randint(0, ow, (n, points), generator=generator) * sw
        iy = (ys[:, :, None, None] + dh * torch.arange(kh)[None, None, :, None]).expand(n, points, kh, kw)
        ix = (xs[:, :, None, None] + dw * torch.arange(kw)[None, None, None, :]).expand(n, points, kh, kw)
        batch = torch.arange(n)[:, None, None, None].expand(n, points, kh, kw)
        patches = xp.permute(0, 2, 3, 1)[batch, iy, ix]  # (N, P, kh, kw, C)
        rows = patches.permute(0, 1, 4, 2, 3).reshape(n * points, c * kh * kw)  # matches weight.view(C_out, -1)
    return torch.cat([rows, torch.ones(len(rows), 1)], 1)  # the constant input of a bias or an intercept


def _padding(conv: nn.Conv2d, x: torch.Tensor) -> list[int]:
    """F.pad's (left, right, top, bottom) as `conv` pads its input: TensorFlow's SAME for Conv2dSame layers (the
    zoo's and timm's), PyTorch's `padding="same"` (odd pixel at the end), or its symmetric numbers."""
    from .models.imagenet import same_padding

    if type(conv).__name__ == "Conv2dSame":
        return same_padding(x.shape[-2:], conv.kernel_size, conv.stride, conv.dilation)
    if conv.padding == "valid":
        return [0, 0, 0, 0]
    if conv.padding == "same":
        (th, tw) = (d * (k - 1) for k, d in zip(conv.kernel_size, conv.dilation))
        return [tw // 2, tw - tw // 2, th // 2, th - th // 2]
    ph, pw = conv.padding
    return [pw, pw, ph, ph]


def select_channels(model: nn.Module, graph: ModelGraph, keep: Sequence[int]) -> list[torch.Tensor]:
    """Indices each group keeps: the `keep[g]` channels with the largest L1 norm of the weights reading them."""
    chosen = []
    for group, k in zip(graph.groups, keep):
        score = torch.zeros(group.channels)
        for name in group.consumers:
            w = model.get_submodule(name).weight.detach()
            per_input = w.abs().transpose(0, 1).reshape(w.shape[1], -1).sum(1)  # (C_in,)
            score += _group_slice(per_input, group.channels)
        chosen.append(torch.topk(score, k).indices.sort().values)
    return chosen


def _group_slice(per_input: torch.Tensor, channels: int) -> torch.Tensor:
    # A consumer that reads exactly the group's channels (the common case); a wider consumer (after a concat)
    # contributes nothing to the score rather than a misaligned one.
    return per_input if len(per_input) == channels else torch.zeros(channels)


def reconstruct(
    weight: torch.Tensor, bias: torch.Tensor | None, gram: torch.Tensor, dropped: set[int], intercept: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Least-squares refit of a layer whose input channels `dropped` go away. Returns dense weights with the
    dropped channels zeroed (the physical cut happens afterwards) and the refitted bias: the layer's own, or with
    `intercept` an offset fitted for a layer without one (the caller folds it into the BN that follows), else None.
    `gram` is the Gram matrix of the layer's input patches with a trailing constant 1. With fewer sampled rows than
    kept inputs (a classifier calibrated on a few images), the layer keeps its selected weights unchanged."""
    c_out, c_in = weight.shape[:2]
    taps = weight[0, 0].numel()
    fit_bias = bias is not None or intercept
    w = torch.cat(
        [weight.reshape(c_out, c_in * taps), (bias if bias is not None else weight.new_zeros(c_out))[:, None]], 1
    )
    keep_cols = torch.tensor(
        [c * taps + t for c in range(c_in) if c not in dropped for t in range(taps)]
        + ([c_in * taps] if fit_bias else []),
        dtype=torch.long,
    )
    g = gram.to(torch.float64)
    if g[-1, -1] < len(keep_cols):  # fewer sampled rows (the 1s) than unknowns: a fit would interpolate the samples
        selected = torch.zeros_like(w)
        selected[:, keep_cols] = w[:, keep_cols]
        return selected[:, :-1].reshape(weight.shape), bias
    g_ss = g[keep_cols][:, keep_cols]
    rhs = g[keep_cols] @ w.T.to(torch.float64)  # X_S^T Y with Y = [X 1] [W b]^T
    g_ss = g_ss + RIDGE * g_ss.diagonal().mean() * torch.eye(len(keep_cols), dtype=torch.float64)
    solved = torch.linalg.solve(g_ss, rhs).T.to(weight.dtype)  # (C_out, |S|)
    new = torch.zeros_like(w)
    new[:, keep_cols] = solved
    return new[:, :-1].reshape(weight.shape), new[:, -1].clone() if fit_bias else None


def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on `batches` (normalised images, moved to the model's
    device): after a cut, the kept channels' statistics shift, and stale ones cost a pruned model 10-20 points of
    one-shot accuracy."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over all batches
        m.train()
    device = next(model.parameters()).device
    with torch.no_grad():
        for images in batches:
            model(images.to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


def apply_policy(
    model: nn.Module,
    graph: ModelGraph,
    policy: PruningPolicy | Sequence[int],
    features: FeatureCache | None = None,
    bn_batches: Iterable[torch.Tensor] | None = None,
) -> nn.Module:
    """A new, physically smaller model: channels selected by L1 magnitude; with `features`, every layer that lost
    input channels refitted by least squares (an intercept included: into its bias, or the BatchNorm after it);
    with `bn_batches` (normalised training images), BatchNorm statistics re-estimated after the cut. The input
    model is left untouched."""
    keep = policy.keep if isinstance(policy, PruningPolicy) else tuple(policy)
    pruned = copy.deepcopy(model).eval()
    surgery = ChannelSurgery(pruned, graph)
    surgery.plan(select_channels(pruned, graph, keep))
    if features is not None:
        with torch.no_grad():
            for name, dropped in surgery.dropped_inputs.items():
                module = pruned.get_submodule(name)
                norm = pruned.get_submodule(graph.norm_after[name]) if name in graph.norm_after else None
                weight, bias = reconstruct(module.weight, module.bias, features.gram[name], dropped, norm is not None)
                module.weight.copy_(weight)
                if module.bias is not None:
                    module.bias.copy_(bias)
                elif bias is not None:  # BN(Wx + c) with running mean m is BN(Wx) with running mean m - c
                    norm.running_mean.sub_(bias)
    pruned = surgery.apply()
    return recalibrate_bn(pruned, bn_batches) if bn_batches else pruned


@dataclass(frozen=True)
class PruneOutcome:
    checkpoint: Path
    policy: PruningPolicy
    params: int
    macs: int
    unpruned_params: int
    unpruned_macs: int
    warnings: tuple[str, ...]  # channels left unpruned, and why


def prune_model(
    source: ModelSource,
    policy: str,
    out: Path,
    data: str | None = None,
    calibration_images: int = 2000,
    multiple: int = 8,
    floor: int = 8,
    on_message: Callable[[str], None] = lambda message: None,
) -> PruneOutcome:
    """Apply `policy` (a policy file or uniform:R) to an unpruned model and write the smaller checkpoint. With
    `data`, the layers that lose inputs are refitted by least squares on `calibration_images` train images."""
    loaded = load(source)
    if loaded.spec.policy is not None:
        raise ToolchainError(
            f"{source.ref} is already pruned: prune the unpruned model it came from with a smaller policy"
        )
    graph = analyze(loaded.model, loaded.spec.input_size)
    chosen = load_policy(policy, graph, loaded.spec.arch, multiple, floor)
    features = None
    if data is not None:
        images = load_split(data, "train", loaded.spec.input_size, calibration_images)
        loaded.spec.match_classes(images.classes, source.ref)
        on_message(f"sampling features of {len(images)} training images for least-squares reconstruction")
        features = collect_features(
            loaded.model,
            graph,
            (
                normalize(x, loaded.spec.mean, loaded.spec.std)
                for x, _ in images.batches(images_per_pass(loaded.spec.input_size, FEATURES_AT_32PX))
            ),
        )
    pruned = apply_policy(loaded.model, graph, chosen, features)
    size = loaded.spec.input_size
    outcome = PruneOutcome(
        out,
        chosen,
        count_params(pruned),
        count_macs(pruned, size),
        count_params(loaded.model),
        count_macs(loaded.model, size),
        graph.warnings,
    )
    save_checkpoint(
        out,
        pruned,
        replace(loaded.spec, policy=chosen.to_dict()),
        {
            "pruned_from": source.ref,
            "reconstructed": features is not None,
            "params": outcome.params,
            "macs": outcome.macs,
            "unpruned_params": outcome.unpruned_params,
            "unpruned_macs": outcome.unpruned_macs,
        },
    )
    return outcome

"""Training, fine-tuning and evaluation of image classifiers on in-memory ImageSets.

The recipe is the usual CIFAR one: SGD with Nesterov momentum, a linear warm-up into a cosine decay, weight decay,
random-crop + flip augmentation. Each finished epoch is saved as a resume point, so an interrupted run continues
where it stopped. Fine-tuning a pruned model may add knowledge distillation from the unpruned one (Hinton et al.:
the student also matches the teacher's softened outputs).

Under `torchrun` the same function trains with DistributedDataParallel: a DistributedSampler gives each process
its shard of every epoch, each process takes batch_size / world_size images per step (so the recipe, and the
learning-rate schedule, do not depend on how many processes there are), and only rank 0 writes the resume file.
A batch larger than one pass holds at the model's input size (`images_per_pass`: 8 images at 224 px) accumulates
its gradients over several passes, so memory does not grow with the resolution; BatchNorm normalises each pass.

`train` is the loop; `train_checkpoint` wraps it into what `toolchain train` and `compress`'s fine-tuning both do:
train with a resume point beside the output, score on test, write a self-describing checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from . import distributed
from .data import TRAINING_AT_32PX, ImageSet, images_per_pass, load_split, normalize
from .errors import ToolchainError, require
from .evaluate import evaluate
from .files import atomic_path, check_resumable
from .layout import resume_file
from .models import LoadedModel, ModelSource, ModelSpec, load, save_checkpoint


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    distill: float = 0.0  # weight of the distillation loss (needs a teacher); 0 trains on labels only
    temperature: float = 4.0  # softening of both models' outputs for distillation
    seed: int = 0
    bf16: bool = False  # forward passes in bfloat16 autocast (CPUs with AVX-512 BF16, GPUs); weights stay fp32
    compile: bool = False  # torch.compile the network

    def __post_init__(self):
        def number(x: float) -> bool:
            return isinstance(x, (int, float)) and math.isfinite(x)

        require(
            self.epochs >= 0 and self.batch_size >= 1,
            f"epochs {self.epochs} and batch size {self.batch_size} "
            "must be whole numbers, epochs 0 or more and the batch at least 1",
        )
        require(number(self.lr) and self.lr > 0, f"learning rate {self.lr} must be a positive number, e.g. 0.1")
        require(
            number(self.weight_decay) and self.weight_decay >= 0,
            f"weight decay {self.weight_decay} must be a number of at least 0, e.g. 5e-4",
        )
        require(
            number(self.momentum) and 0 <= self.momentum < 1, f"momentum {self.momentum} must be in [0, 1), e.g. 0.9"
        )
        require(
            number(self.warmup_epochs) and self.warmup_epochs >= 0,
            f"warm-up {self.warmup_epochs} epochs must be 0 or more",
        )
        require(
            number(self.label_smoothing) and 0 <= self.label_smoothing < 1,
            f"label smoothing {self.label_smoothing} must be in [0, 1)",
        )
        require(
            number(self.distill) and 0 <= self.distill <= 1,
            f"distillation weight {self.distill} is out of range: use 0 (labels only) to 1 (teacher only), e.g. 0.5",
        )
        require(
            number(self.temperature) and self.temperature > 0,
            f"distillation temperature {self.temperature} must be positive, e.g. 4",
        )
        require(0 <= self.seed < 2**63, f"seed {self.seed} must be a whole number in [0, 2^63)")


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    loss: float
    train_top1: float
    val_top1: float | None


@dataclass(frozen=True)
class Splits:
    """What training reads: train to learn from, val to watch each epoch (optional), test to score at the end."""

    train: ImageSet
    val: ImageSet | None
    test: ImageSet


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to zero."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * peak * (1 + math.cos(math.pi * progress))


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL divergence between softened outputs, scaled by T^2 so its gradients match the label loss's size."""
    return (
        F.kl_div(
            F.log_softmax(student / temperature, 1),
            F.log_softmax(teacher / temperature, 1),
            reduction="batchmean",
            log_target=True,
        )
        * temperature**2
    )


def train(
    model: nn.Module,
    spec: ModelSpec,
    train_set: ImageSet,
    cfg: TrainConfig,
    val_set: ImageSet | None = None,
    resume_path: Path | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
    teacher: nn.Module | None = None,
) -> list[EpochResult]:
    """Train in place. `on_step(step, total_steps, loss)` and `on_epoch(result)` report progress.

    With `resume_path`, the model and optimizer state are saved there after every epoch and picked up again on
    the next call with the same path and config, so a killed run resumes instead of starting over. Shuffling and
    augmentation are seeded per epoch, so a resumed run sees the same batches it would have seen.
    """
    if cfg.distill and teacher is None:
        raise ToolchainError(
            "distillation needs a teacher: fine-tune a pruned checkpoint of a model, or set distill to 0"
        )
    world, rank = distributed.world_size(), distributed.rank()
    if cfg.batch_size % world:
        raise ToolchainError(
            f"batch size {cfg.batch_size} does not split over {world} processes: use a multiple of {world}"
        )
    device = distributed.training_device()
    torch.manual_seed(cfg.seed)
    model.to(device, memory_format=torch.channels_last)  # ~1.4x faster convs on x86 CPUs
    if teacher is not None:
        teacher.to(device, memory_format=torch.channels_last).eval()
    net = DistributedDataParallel(model) if world > 1 else model
    if cfg.compile:
        net = torch.compile(net)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]  # BN and bias terms are not decayed
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=True,
    )
    sampler = DistributedSampler(range(len(train_set)), num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    local_batch = cfg.batch_size // world
    steps_per_epoch = math.ceil(len(sampler) / local_batch)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
    history: list[EpochResult] = []
    start_epoch = 0
    if resume_path is not None and resume_path.exists():
        state = torch.load(resume_path, weights_only=True, map_location=device)
        check_resumable(resume_path, state["config"], asdict(cfg), f"delete {resume_path} to start over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = [EpochResult(**h) for h in state["history"]]
        start_epoch = len(history)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    per_pass = images_per_pass(spec.input_size, TRAINING_AT_32PX)  # memory stays flat at any resolution
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 1009 + rank)
        loss_sum, correct, seen = 0.0, 0, 0
        for i, (images, labels) in enumerate(train_set.batches(local_batch, order, augment=generator)):
            labels = labels.to(device)
            step = epoch * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, warmup_steps, cfg.lr)
            x = normalize(images, spec.mean, spec.std).to(device).contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            for xs, ys in zip(x.split(per_pass), labels.split(per_pass)):  # one pass per batch below 224 px or so
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                    logits = net(xs).float()
                    if cfg.distill:
                        with torch.no_grad():
                            target = teacher(xs).float()  # type: ignore[misc]
                loss = loss_fn(logits, ys)
                if cfg.distill:
                    loss = (1 - cfg.distill) * loss + cfg.distill * distillation_loss(logits, target, cfg.temperature)
                (loss * (len(ys) / len(labels))).backward()  # the batch's mean loss, pass by pass
                loss_sum += loss.item() * len(ys)
                correct += (logits.argmax(1) == ys).sum().item()
            optimizer.step()
            seen += len(labels)
            if on_step:
                on_step(step + 1, total_steps, loss_sum / seen)
        val_top1 = evaluate(model, spec, val_set) if val_set is not None and len(val_set) else None
        result = EpochResult(epoch + 1, loss_sum / max(1, seen), correct / max(1, seen), val_top1)
        history.append(result)
        if resume_path is not None and distributed.is_main():
            _save_resume(resume_path, model, optimizer, cfg, history)
        if on_epoch:
            on_epoch(result)
    model.eval().cpu()
    return history


def _save_resume(path: Path, model, optimizer, cfg: TrainConfig, history: list[EpochResult]) -> None:
    state = {
        "config": asdict(cfg),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "history": [asdict(h) for h in history],
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train_checkpoint(
    loaded: LoadedModel,
    splits: Splits,
    cfg: TrainConfig,
    out: Path,
    teacher: nn.Module | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
    metrics: dict | None = None,
) -> dict:
    """Train `loaded.model` in place (resuming from `out`'s resume point when a killed run left one), score it on
    `splits.test` and write the checkpoint `out` with its metrics (rank 0; the others wait). Returns the metrics."""
    resume = resume_file(out)
    history = train(loaded.model, loaded.spec, splits.train, cfg, splits.val, resume, on_step, on_epoch, teacher)
    metrics = {
        **(metrics or {}),
        "top1_test": evaluate(loaded.model, loaded.spec, splits.test),
        "top1_val": history[-1].val_top1 if history else None,
        "test_images": len(splits.test),
        "train_config": asdict(cfg),
        "processes": distributed.world_size(),
    }
    if distributed.is_main():
        save_checkpoint(out, loaded.model, loaded.spec, metrics)
        resume.unlink(missing_ok=True)
    distributed.barrier()
    return metrics


@dataclass(frozen=True)
class TrainOutcome:
    checkpoint: Path
    top1_test: float
    top1_val: float | None
    epochs: int
    processes: int


def train_model(
    source: ModelSource,
    data: str,
    cfg: TrainConfig,
    out: Path,
    limit: int | None = None,
    teacher: ModelSource | None = None,
    on_message: Callable[[str], None] = lambda message: None,
    on_step: Callable[[int, int, float], None] | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> TrainOutcome | None:
    """`toolchain train`: train (or continue training) a MODEL on DATA and write the checkpoint `out`; a killed
    run with the same `out` resumes. Under torchrun every process trains its shard; rank 0 gets the outcome."""
    distributed.init_from_env()
    if cfg.distill and teacher is None:
        raise ToolchainError("--distill needs --teacher MODEL, e.g. the unpruned model a pruned checkpoint came from")
    loaded = load(source, pretrained=False, init_seed=cfg.seed)
    teacher_model = load(teacher).model if teacher is not None and cfg.distill else None
    size = loaded.spec.input_size
    splits = Splits(*(load_split(data, split, size, limit) for split in ("train", "val", "test")))
    loaded = replace(loaded, spec=loaded.spec.match_classes(splits.train.classes, source.ref))
    world = distributed.world_size()
    on_message(
        f"training {source.ref} on {len(splits.train)} images for {cfg.epochs} epochs (val {len(splits.val)}, "
        f"test {len(splits.test)})" + (f", data-parallel over {world} processes" if world > 1 else "")
    )
    metrics = train_checkpoint(loaded, splits, cfg, out, teacher_model, on_step, on_epoch, {"data": data})
    return (
        TrainOutcome(out, metrics["top1_test"], metrics["top1_val"], cfg.epochs, world)
        if distributed.is_main()
        else None
    )

"""Image classification data: DATA specs -> in-memory uint8 image sets, the seeded train/val split, batches.

A DATA spec is one of
  * `cifar10`: the folder or archive named by $TOOLCHAIN_CIFAR10, else torchvision's CIFAR-10 download;
  * a folder in ImageFolder layout: `train/<class>/*.jpg` and `test/<class>/*.jpg` (or `val/` for the test split);
  * a `.tar`, `.tar.gz` or `.tgz` archive of that layout, read without extracting it.

Images are decoded once, resized to the model's input size, and cached as uint8 tensors under
$TOOLCHAIN_CACHE (default ~/.cache/toolchain): small-image datasets fit in memory, and decoding 60,000 JPEGs on
every run would cost more than an epoch of training a small CIFAR model.

Splits: `train` is the source's train folder minus a fixed, seeded held-out slice called `val` (5,000 images for
CIFAR-10, 10% in general), which the pruning search uses as its reward set; `test` is only for final reporting.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from .errors import ToolchainError
from .files import atomic_path

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
MAX_VAL_SIZE = 5000
SPLIT_SEED = 0
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class ImageSet:
    """Images as a uint8 tensor (N, 3, H, W) with int64 labels and the class names they index."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor | slice) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], self.classes)

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (uint8 images, labels) batches; shuffled when a generator is given."""
        order = torch.randperm(len(self), generator=generator) if generator is not None else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            idx = order[start : start + batch_size]
            yield self.images[idx], self.labels[idx]


def cache_dir() -> Path:
    return Path(os.environ.get("TOOLCHAIN_CACHE", Path.home() / ".cache" / "toolchain"))


def load_split(data: str, split: Split, image_size: int, limit: int | None = None) -> ImageSet:
    """Load one split of a DATA spec at `image_size` x `image_size`; `limit` keeps a fixed random N of them
    (the same N every time; random, so every class is represented in about its proportion)."""
    if split not in SPLITS:
        raise ToolchainError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    train, test = _load_source(data, image_size)
    if split == "test":
        chosen = test
    else:
        val_index, train_index = split_indices(len(train))
        chosen = train.subset(val_index if split == "val" else train_index)
    if limit is None or limit >= len(chosen):
        return chosen
    keep = torch.randperm(len(chosen), generator=torch.Generator().manual_seed(SPLIT_SEED + 1))[:limit]
    return chosen.subset(keep.sort().values)


def split_indices(n_train: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out `val` indices and the remaining `train` indices: fixed by SPLIT_SEED, sorted for locality."""
    val_size = min(MAX_VAL_SIZE, n_train // 10)
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return order[:val_size].sort().values, order[val_size:].sort().values


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 normalised with per-channel mean/std given in [0, 1] units."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard CIFAR augmentation on a uint8 batch: random crop after padding by size/8, random horizontal flip."""
    b, _, h, w = images.shape
    pad = max(1, h // 8)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    out = torch.empty_like(images)
    for i in range(b):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


# --- sources -------------------------------------------------------------------------------------------------------


def _load_source(data: str, image_size: int) -> tuple[ImageSet, ImageSet]:
    if data == "cifar10":
        configured = os.environ.get("TOOLCHAIN_CIFAR10")
        if not configured:
            return _cached(("torchvision-cifar10", image_size), lambda: _torchvision_cifar10(image_size))
        path = Path(configured)
        if not path.exists():
            raise ToolchainError(
                f"TOOLCHAIN_CIFAR10 points to {path}, which does not exist: set it to a CIFAR-10 folder or .tar.gz in "
                "ImageFolder layout"
            )
    else:
        path = Path(data)
        if not path.exists():
            raise ToolchainError(
                f"data path {path} does not exist: pass `cifar10`, an ImageFolder folder with train/ and test/, or a "
                ".tar.gz of one"
            )
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, image_size)
    if path.is_dir():
        return _cached(key, lambda: _decode_splits(_folder_members(path), path, image_size))
    if path.name.endswith(_ARCHIVE_SUFFIXES):
        return _cached(key, lambda: _decode_splits(_archive_members(path), path, image_size))
    raise ToolchainError(
        f"{path} is neither a folder nor a .tar/.tar.gz archive: pass an ImageFolder folder or archive"
    )


def _cached(key: tuple, build) -> tuple[ImageSet, ImageSet]:
    digest = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
    path = cache_dir() / "datasets" / f"{digest}.pt"
    if path.exists():
        try:
            blob = torch.load(path, weights_only=True)
            return tuple(
                ImageSet(blob[f"{s}_images"], blob[f"{s}_labels"], tuple(blob["classes"])) for s in ("train", "test")
            )  # type: ignore[return-value]
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            path.unlink(missing_ok=True)
    train, test = build()
    with atomic_path(path) as tmp:
        torch.save(
            {
                "train_images": train.images,
                "train_labels": train.labels,
                "test_images": test.images,
                "test_labels": test.labels,
                "classes": list(train.classes),
            },
            tmp,
        )
    return train, test


def _split_of(parts: tuple[str, ...]) -> tuple[str, str] | None:
    """('data', 'train', 'cat', '0001.jpg') -> ('train', 'cat'); the split folder may sit under a top folder."""
    if len(parts) < 3 or not parts[-1].lower().endswith(_IMAGE_SUFFIXES) or parts[-1].startswith("."):
        return None
    split, cls = parts[-3], parts[-2]
    return (split, cls) if split in ("train", "test", "val") else None


def _folder_members(root: Path) -> Iterator[tuple[str, str, bytes]]:
    for file in sorted(root.rglob("*")):
        found = _split_of(file.relative_to(root).parts)
        if found and file.is_file():
            yield found[0], found[1], file.read_bytes()


def _archive_members(path: Path) -> Iterator[tuple[str, str, bytes]]:
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                found = _split_of(tuple(Path(member.name).parts))
                if found and member.isfile():
                    yield found[0], found[1], tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ToolchainError(
            f"cannot read archive {path} ({e}): check the file is a complete .tar or .tar.gz"
        ) from None


def _decode_splits(
    members: Iterator[tuple[str, str, bytes]], source: Path, image_size: int
) -> tuple[ImageSet, ImageSet]:
    raw: dict[str, list[tuple[str, bytes]]] = {"train": [], "test": [], "val": []}
    for split, cls, blob in members:
        raw[split].append((cls, blob))
    test_name = "test" if raw["test"] else "val"
    for needed in ("train", test_name):
        if not raw[needed]:
            raise ToolchainError(
                f"{source} has no {needed}/ images: expected ImageFolder layout train/<class>/*.jpg and "
                "test/<class>/*.jpg (or val/)"
            )
    classes = tuple(sorted({cls for cls, _ in raw["train"]}))
    unknown = sorted({cls for cls, _ in raw[test_name]} - set(classes))
    if unknown:
        raise ToolchainError(
            f"{source}: classes {unknown} appear in {test_name}/ but not in train/: use the same class folders in both"
        )
    return _decode(raw["train"], classes, image_size, source), _decode(raw[test_name], classes, image_size, source)


def _decode(items: list[tuple[str, bytes]], classes: tuple[str, ...], size: int, source: Path) -> ImageSet:
    items.sort(key=lambda item: item[0])  # stable: keeps file order within a class
    index = {c: i for i, c in enumerate(classes)}
    images = np.empty((len(items), size, size, 3), dtype=np.uint8)
    for i, (_, blob) in enumerate(items):
        try:
            with Image.open(io.BytesIO(blob)) as im:
                images[i] = np.asarray(_fit(im.convert("RGB"), size))
        except OSError as e:
            raise ToolchainError(
                f"{source}: an image of class {items[i][0]!r} cannot be decoded ({e}): remove or replace it"
            ) from None
    labels = torch.tensor([index[c] for c, _ in items], dtype=torch.int64)
    return ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, classes)


def _fit(im: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` and centre-crop to a square (a no-op for images already size x size)."""
    if im.size == (size, size):
        return im
    w, h = im.size
    scale = size / min(w, h)
    im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    left, top = (im.width - size) // 2, (im.height - size) // 2
    return im.crop((left, top, left + size, top + size))


def _torchvision_cifar10(image_size: int) -> tuple[ImageSet, ImageSet]:
    import torchvision

    root = cache_dir() / "cifar10-download"
    try:
        sets = [torchvision.datasets.CIFAR10(str(root), train=t, download=True) for t in (True, False)]
    except Exception as e:
        raise ToolchainError(
            f"CIFAR-10 is not available offline and could not be downloaded ({type(e).__name__}): "
            "set TOOLCHAIN_CIFAR10 to a CIFAR-10 folder or .tar.gz in ImageFolder layout"
        ) from None
    out = []
    for ds in sets:
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        if image_size != 32:
            images = (
                torch.nn.functional.interpolate(images.float(), size=image_size, mode="bilinear")
                .round()
                .clamp(0, 255)
                .to(torch.uint8)
            )
        out.append(ImageSet(images, torch.tensor(ds.targets, dtype=torch.int64), CIFAR10_CLASSES))
    return out[0], out[1]

"""Image classification data: DATA specs -> image sets at the model's input size, the seeded train/val split, batches.

A DATA spec is one of
  * `cifar10`: the folder or archive named by $TOOLCHAIN_CIFAR10, else torchvision's CIFAR-10 download;
  * a folder in ImageFolder layout: `train/<class>/*.jpg` and `test/<class>/*.jpg` (or `val/` for the test split);
  * a `.tar`, `.tar.gz` or `.tgz` archive of that layout (a compressed one is unpacked once into the cache, as a
    plain .tar that files are read from by offset).

Opening a source lists its files (an archive's listing is cached); it decodes nothing. A split whose decoded images fit
`MEMORY_BUDGET` at the model's input size (all of CIFAR-10 at 32 px is 180 MB) is decoded once and held in memory as a
uint8 tensor, and a whole source that fits is cached decoded under $TOOLCHAIN_CACHE (default ~/.cache/toolchain):
decoding 60,000 JPEGs on every run would cost more than an epoch of a small CIFAR model. A larger split (photos at 224
px) is streamed through a DataLoader with worker processes, so memory does not grow with the dataset. Files that are not
images are left out and counted; images that cannot be decoded are skipped and counted; an empty class folder is an
error naming it.

Transforms: evaluation resizes the shorter side to the input size and crops the centre; training augments with the
CIFAR recipe (pad by size/8, random crop, flip) up to 64 px and with a random resized crop and flip above.

Splits: `train` is the source's train folder minus a fixed, seeded held-out slice called `val` (5,000 images for
CIFAR-10, 10% in general), which the pruning search uses as its reward set; `test` is only for final reporting.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import tarfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from . import console
from .errors import ToolchainError
from .files import atomic_path, write_atomic

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
MAX_VAL_SIZE = 5000
SPLIT_SEED = 0
MEMORY_BUDGET = 256 * 2**20  # bytes of decoded images a split may hold in memory before it is streamed
SMALL_IMAGES = 64  # up to this input size, training augments the CIFAR way
# Images per forward pass, given at 32 px: a pass's activations, and so its memory, grow with images x pixels.
# Small passes are also faster on a CPU: their activations stay in its caches. Below a few images, though, a pass's
# fixed costs outweigh that (BENCHMARKS.md, "Inference passes"), so inference never takes fewer than INFERENCE_AT_LEAST.
INFERENCE_AT_32PX = 32  # without gradients
INFERENCE_AT_LEAST = 6
FEATURES_AT_32PX = 250  # sampling features and re-estimating BatchNorm (its average weighs every pass alike)
# With gradients: 8 images at 224 px, the whole 128-image batch at 32 px; a larger batch accumulates over several
# passes. A pass holds its activations until its backward pass: at 224 px 16 images per pass set fine-tuning's
# memory peak; 8 add half the memory (mobilenet_v2 0.57 GB, not 1.15) at about the same speed or better
# (mobilenet_v2 1.7x faster, resnet18 8% slower: "Training passes"), while BatchNorm, which normalises each pass,
# still sees 8 images.
TRAINING_AT_32PX = 392
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def images_per_pass(image_size: int, at_32px: int) -> int:
    """How many `image_size` images hold the pixels of `at_32px` CIFAR-sized ones: a batch size whose memory does
    not grow with the resolution."""
    return max(1, at_32px * 32 * 32 // (image_size * image_size))


def inference_images_per_pass(image_size: int) -> int:
    return max(INFERENCE_AT_LEAST, images_per_pass(image_size, INFERENCE_AT_32PX))


def cache_dir() -> Path:
    return Path(os.environ.get("TOOLCHAIN_CACHE", Path.home() / ".cache" / "toolchain"))


# --- image sets ----------------------------------------------------------------------------------------------------


class ImageSet:
    """Labelled images at one square size, as (uint8 (B, 3, S, S), int64 labels) batches."""

    classes: tuple[str, ...]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> ImageSet:
        raise NotImplementedError

    def batches(
        self, batch_size: int, order: torch.Tensor | None = None, augment: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches in `order` (all images in sequence by default); with `augment`, training augmentation drawn
        from that generator, so a resumed epoch sees the same crops."""
        raise NotImplementedError

    def materialize(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image and label at once (for small sets: a parity check, quantization calibration)."""
        images, labels = zip(*self.batches(256)) if len(self) else ((), ())
        return (
            torch.cat(images) if images else torch.empty(0, 3, 0, 0, dtype=torch.uint8),
            torch.cat(labels) if labels else torch.empty(0, dtype=torch.int64),
        )


@dataclass(frozen=True)
class TensorImages(ImageSet):
    """Images decoded into one uint8 tensor (N, 3, S, S)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def subset(self, index: torch.Tensor) -> TensorImages:
        return TensorImages(self.images[index], self.labels[index], self.classes)

    def materialize(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images, self.labels

    def batches(self, batch_size, order=None, augment=None):
        order = torch.arange(len(self)) if order is None else order
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            images = self.images[idx]
            yield (augment_batch(images, augment) if augment is not None else images), self.labels[idx]


@dataclass(frozen=True)
class StreamedImages(ImageSet):
    """Images read and decoded batch by batch by DataLoader workers: memory stays flat however many there are."""

    source: Source
    refs: tuple[str, ...]
    labels: torch.Tensor
    classes: tuple[str, ...]
    size: int

    def subset(self, index: torch.Tensor) -> StreamedImages:
        return StreamedImages(
            self.source, tuple(self.refs[int(i)] for i in index), self.labels[index], self.classes, self.size
        )

    def batches(self, batch_size, order=None, augment=None):
        order = torch.arange(len(self)) if order is None else order
        # Large images are cropped at full resolution in the workers, from one seed per image drawn in order (so the
        # crops do not depend on which worker decodes what); small ones are augmented here, batch by batch.
        per_image = augment is not None and self.size > SMALL_IMAGES
        seeds = (
            torch.randint(0, 2**62, (len(order),), generator=augment) if per_image else torch.full((len(order),), -1)
        )
        items = [(self.refs[int(i)], int(self.labels[i]), int(s)) for i, s in zip(order, seeds)]
        loader = torch.utils.data.DataLoader(
            _Decoded(self.source, items, self.size),
            batch_size=batch_size,
            num_workers=min(2, os.cpu_count() or 1),
            collate_fn=_collate,
            multiprocessing_context=_workers(),
        )
        skipped = 0
        for images, labels, missing in loader:
            skipped += missing
            if len(labels):
                yield (augment_batch(images, augment) if augment is not None and not per_image else images), labels
        if skipped:
            console.info(f"{self.source.path}: {skipped} images could not be decoded and were skipped")


@functools.cache
def _workers():
    """Decoding workers start from a fork server, not by forking this process: the converter's libraries run
    threads, and a forked copy of a threaded process can deadlock. The server imports this module once, so each
    worker starts in milliseconds."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


class _Decoded(torch.utils.data.Dataset):
    def __init__(self, source: Source, items: list[tuple[str, int, int]], size: int):
        self.source, self.items, self.size = source, items, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        ref, label, seed = self.items[i]
        image = _decode(self.source.read(ref), self.size, seed)
        return image, label


def _collate(batch):
    kept = [(image, label) for image, label in batch if image is not None]
    if not kept:
        return torch.empty(0, 3, 0, 0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), len(batch)
    return (
        # stacked straight into the shared memory it is sent in: stacked on the heap and copied there, every batch
        # left its heap copy behind in the worker (over 1 GB in a 224-px epoch)
        torch.utils.data.default_collate([image for image, _ in kept]),
        torch.tensor([label for _, label in kept]),
        len(batch) - len(kept),
    )


def _decode(blob: bytes, size: int, seed: int) -> torch.Tensor | None:
    """uint8 (3, size, size): evaluation's resize-and-centre-crop when `seed` is -1, else training's random crop
    from the full-resolution image. None when the bytes are not a decodable image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a bomb is refused, not decoded
            with Image.open(io.BytesIO(blob)) as im:
                im = im.convert("RGB")
    except (*_DECODE_ERRORS, Image.DecompressionBombWarning):
        return None
    if seed < 0 or size <= SMALL_IMAGES:
        return torch.from_numpy(np.array(_fit(im, size))).permute(2, 0, 1).contiguous()
    generator = torch.Generator().manual_seed(seed)
    left, top, w, h = _random_box(im.width, im.height, generator)
    im = im.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    x = torch.from_numpy(np.array(im)).permute(2, 0, 1).contiguous()
    return x.flip(-1) if torch.rand(1, generator=generator) < 0.5 else x


def _fit(im: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` and centre-crop to a square (a no-op for images already size x size)."""
    if im.size == (size, size):
        return im
    w, h = im.size
    scale = size / min(w, h)
    im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    left, top = (im.width - size) // 2, (im.height - size) // 2
    return im.crop((left, top, left + size, top + size))


def _random_box(width: int, height: int, generator: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """A random resized crop's box (Inception-style, as torchvision's RandomResizedCrop draws it)."""
    area = width * height
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(*scale, generator=generator))
        aspect = math.exp(float(torch.empty(1).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            return left, top, w, h
    side = min(width, height)  # fall back to the centre square
    return (width - side) // 2, (height - side) // 2, side, side


def augment_batch(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Training augmentation of a uint8 batch held in memory: the CIFAR recipe (pad by size/8, random crop, random
    horizontal flip) for small images, a random resized crop and flip for larger ones."""
    b, _, h, w = images.shape
    if h > SMALL_IMAGES:
        out = torch.empty_like(images)
        for i in range(b):
            left, top, cw, ch = _random_box(w, h, generator)
            crop = images[i : i + 1, :, top : top + ch, left : left + cw].float()
            resized = torch.nn.functional.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
            out[i] = resized[0].round().clamp(0, 255).to(torch.uint8)
            if torch.rand(1, generator=generator) < 0.5:
                out[i] = out[i].flip(-1)
        return out
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


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 normalised with per-channel mean/std given in [0, 1] units."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s


# --- splits --------------------------------------------------------------------------------------------------------


def load_split(data: str, split: Split, image_size: int, limit: int | None = None) -> ImageSet:
    """One split of a DATA spec at `image_size` x `image_size`; `limit` keeps a fixed random N of them (the same N
    every time; random, so every class is represented in about its proportion)."""
    if split not in SPLITS:
        raise ToolchainError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise ToolchainError(f"--limit {limit} must be at least 1")
    source = open_source(data)
    if source is None:  # torchvision's CIFAR-10 download, held in memory
        train, test = _cached(("torchvision-cifar10", image_size), lambda: _torchvision_cifar10(image_size))
    elif _fits(source.size, image_size):
        train, test = _cached(source.key + (image_size,), lambda: source.decoded(image_size))
    else:
        train, test = (source.streamed(s, image_size) for s in ("train", source.test_split))
    if split == "test":
        chosen = test
    else:
        val_index, train_index = split_indices(len(train))
        chosen = train.subset(val_index if split == "val" else train_index)
    if limit is not None and limit < len(chosen):
        keep = torch.randperm(len(chosen), generator=torch.Generator().manual_seed(SPLIT_SEED + 1))[:limit]
        chosen = chosen.subset(keep.sort().values)
    if isinstance(chosen, StreamedImages) and _fits(len(chosen), image_size):
        chosen = TensorImages(*chosen.materialize(), chosen.classes)  # e.g. the search's reward images: decode once
    return chosen


def split_indices(n_train: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out `val` indices and the remaining `train` indices: fixed by SPLIT_SEED, sorted for locality."""
    val_size = min(MAX_VAL_SIZE, n_train // 10)
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return order[:val_size].sort().values, order[val_size:].sort().values


def _fits(images: int, size: int) -> bool:
    return images * 3 * size * size <= MEMORY_BUDGET


# --- sources -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """An ImageFolder on disk: its image files by split (`ref`s: paths under the folder, or `offset:size` in a
    plain tar), its classes (the train/ class folders, sorted), and how to read one file."""

    path: Path
    key: tuple  # identifies this version of the source, for the decoded cache
    members: dict[str, tuple[tuple[str, str], ...]]  # split -> ((class, ref), ...), sorted by class, then file
    classes: tuple[str, ...]
    tar: Path | None  # the plain tar files are read from, for archives

    @property
    def test_split(self) -> str:
        return "test" if self.members.get("test") else "val"

    @property
    def size(self) -> int:
        return len(self.members["train"]) + len(self.members[self.test_split])

    def read(self, ref: str) -> bytes:
        if self.tar is None:
            return (self.path / ref).read_bytes()
        offset, size = map(int, ref.split(":"))
        with open(self.tar, "rb") as f:
            f.seek(offset)
            return f.read(size)

    def streamed(self, split: str, size: int) -> StreamedImages:
        index = {c: i for i, c in enumerate(self.classes)}
        members = self.members[split]
        labels = torch.tensor([index[c] for c, _ in members], dtype=torch.int64)
        return StreamedImages(self, tuple(ref for _, ref in members), labels, self.classes, size)

    def decoded(self, size: int) -> tuple[TensorImages, TensorImages]:
        """Both splits decoded into memory (by the DataLoader workers, in parallel)."""
        out = []
        for split in ("train", self.test_split):
            images, labels = self.streamed(split, size).materialize()
            out.append(TensorImages(images, labels, self.classes))
        return out[0], out[1]


def open_source(data: str) -> Source | None:
    """The source a DATA spec names (None: torchvision's CIFAR-10 download)."""
    if data == "cifar10":
        configured = os.environ.get("TOOLCHAIN_CIFAR10")
        if not configured:
            return None
        path = Path(configured)
        if not path.exists():
            raise ToolchainError(
                f"TOOLCHAIN_CIFAR10 points to {path}, which does not exist: set it to a CIFAR-10 "
                "folder or .tar.gz in ImageFolder layout"
            )
    else:
        path = Path(data)
        if not path.exists():
            raise ToolchainError(
                f"data path {path} does not exist: pass `cifar10`, an ImageFolder folder with train/ "
                "and test/, or a .tar.gz of one"
            )
    if not path.is_dir() and not path.name.endswith(_ARCHIVE_SUFFIXES):
        raise ToolchainError(
            f"{path} is neither a folder nor a .tar/.tar.gz archive: pass an ImageFolder folder or archive"
        )
    stat = path.stat()
    return _indexed(path.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _indexed(path: Path, size: int, mtime_ns: int) -> Source:
    """List a source's files once per process (several splits are loaded from one source in a run)."""
    key = (str(path), size, mtime_ns)
    if path.is_dir():
        tar, listing = None, _folder_listing(path)
    else:
        tar = _plain_tar(path, key)
        listing = _tar_listing(tar, path, key)
    return _index(path, key, listing, tar)


def _index(path: Path, key: tuple, listing: Iterator[tuple[tuple[str, ...], str]], tar: Path | None) -> Source:
    """Files by split and class from (path parts, ref) pairs; the split folder may sit under a top folder."""
    members: dict[str, list[tuple[str, str]]] = {"train": [], "test": [], "val": []}
    class_dirs: dict[str, set[str]] = {"train": set(), "test": set(), "val": set()}
    others = 0
    for parts, ref in listing:
        if not ref:  # a folder: a class folder when it sits in a split folder
            if len(parts) >= 2 and parts[-2] in members:
                class_dirs[parts[-2]].add(parts[-1])
            continue
        if len(parts) < 3 or parts[-3] not in members:
            continue
        split, cls, name = parts[-3:]
        class_dirs[split].add(cls)
        if name.startswith(".") or not name.lower().endswith(_IMAGE_SUFFIXES):
            others += 1
            continue
        members[split].append((cls, ref))
    test = "test" if members["test"] else "val"
    for needed in ("train", test):
        if not members[needed]:
            raise ToolchainError(
                f"{path} has no {needed}/ images: expected ImageFolder layout train/<class>/*.jpg and "
                "test/<class>/*.jpg (or val/)"
            )
    classes = tuple(sorted(class_dirs["train"]))
    empty = sorted(c for c in classes if not any(cls == c for cls, _ in members["train"]))
    if empty:
        raise ToolchainError(f"{path}: class folder train/{empty[0]} has no images: add images to it or remove it")
    unknown = sorted({cls for cls, _ in members[test]} - set(classes))
    if unknown:
        raise ToolchainError(
            f"{path}: classes {unknown} appear in {test}/ but not in train/: use the same class folders in both"
        )
    if others:
        console.info(f"{path}: left out {others} files that are not images ({', '.join(_IMAGE_SUFFIXES)})")
    ordered = {s: tuple(sorted(m, key=lambda item: item[0])) for s, m in members.items()}  # stable within a class
    return Source(path, key, ordered, classes, tar)


def _folder_listing(root: Path) -> Iterator[tuple[tuple[str, ...], str]]:
    """(path parts, ref) per file under `root`, and (parts, "") per folder."""
    for entry in sorted(root.rglob("*")):
        relative = entry.relative_to(root)
        yield relative.parts, str(relative) if entry.is_file() else ""


def _plain_tar(path: Path, key: tuple) -> Path:
    """A plain .tar to read files from by offset: the archive itself, or a compressed one unpacked once into the
    cache (a gzip stream cannot be read at an offset)."""
    if path.name.endswith(".tar"):
        return path
    plain = _cache_file(key, ".tar")
    if not plain.exists():
        import gzip
        import shutil

        console.info(f"unpacking {path} into {plain} (once)")
        try:
            with gzip.open(path, "rb") as src, atomic_path(plain) as tmp, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, EOFError) as e:
            raise ToolchainError(f"cannot read archive {path} ({e}): check the file is a complete .tar.gz") from None
    return plain


def _tar_listing(tar: Path, source: Path, key: tuple) -> list[tuple[tuple[str, ...], str]]:
    """(path parts, `offset:size`) per file of a plain tar, and (parts, "") per folder. Walking the headers of
    CIFAR-10's 60,000 members takes seconds, every run, even when the decoded images are cached: so the listing is
    cached too, under the key of the archive's version (a damaged entry is listed again, never trusted)."""
    cached = _cache_file(key, ".listing.json")
    try:
        return [(tuple(parts), ref) for parts, ref in json.loads(cached.read_text())]
    except (OSError, ValueError, TypeError):  # none yet, unreadable or damaged: listed again and replaced
        pass
    listing = list(_walk_tar(tar, source))
    try:
        write_atomic(cached, json.dumps(listing))
    except (OSError, ToolchainError):  # a plain .tar needs no cache to be read: an unwritable one only costs time
        pass
    return listing


def _walk_tar(tar: Path, source: Path) -> Iterator[tuple[tuple[str, ...], str]]:
    try:
        with tarfile.open(tar, "r:") as archive:
            for member in archive:
                parts = tuple(Path(member.name).parts)
                if member.isfile():
                    yield parts, f"{member.offset_data}:{member.size}"
                elif member.isdir():
                    yield parts, ""
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ToolchainError(
            f"cannot read archive {source} ({e}): check the file is a complete .tar or .tar.gz"
        ) from None


def _cache_file(key: tuple, suffix: str) -> Path:
    """Where something derived from a source version (`key`) is cached."""
    return cache_dir() / "datasets" / f"{hashlib.sha1(repr(key).encode()).hexdigest()[:16]}{suffix}"


def _cached(key: tuple, build) -> tuple[TensorImages, TensorImages]:
    path = _cache_file(key, ".pt")
    if path.exists():
        try:
            blob = torch.load(path, weights_only=True)
            return tuple(
                TensorImages(blob[f"{s}_images"], blob[f"{s}_labels"], tuple(blob["classes"]))
                for s in ("train", "test")
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


def _torchvision_cifar10(image_size: int) -> tuple[TensorImages, TensorImages]:
    import torchvision

    root = cache_dir() / "cifar10-download"
    try:
        sets = [torchvision.datasets.CIFAR10(str(root), train=t, download=True) for t in (True, False)]
    except Exception as e:
        raise ToolchainError(
            f"CIFAR-10 is not available offline and could not be downloaded ({type(e).__name__}): set "
            "TOOLCHAIN_CIFAR10 to a CIFAR-10 folder or .tar.gz in ImageFolder layout"
        ) from None
    out = []
    for ds in sets:
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        if image_size != 32:
            images = torch.nn.functional.interpolate(images.float(), size=image_size, mode="bilinear")
            images = images.round().clamp(0, 255).to(torch.uint8)
        out.append(TensorImages(images, torch.tensor(ds.targets, dtype=torch.int64), CIFAR10_CLASSES))
    return out[0], out[1]

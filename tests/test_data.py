import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image_folder

from toolchain import data
from toolchain.data import CIFAR10_CLASSES, augment_batch, load_split, open_source, split_indices
from toolchain.errors import ToolchainError


def test_cifar10_archive_counts_labels_and_split(cifar10):
    train, val, test = (load_split(cifar10, s, 32) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (45000, 5000, 10000)
    assert train.classes == CIFAR10_CLASSES
    assert train.images.shape == (45000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.labels.bincount().tolist() == [1000] * 10
    assert set(val.labels.unique().tolist()) == set(range(10))


def test_split_is_deterministic_and_disjoint():
    val_a, train_a = split_indices(50000)
    val_b, train_b = split_indices(50000)
    assert torch.equal(val_a, val_b) and torch.equal(train_a, train_b)
    assert len(val_a) == 5000 and len(train_a) == 45000
    assert not set(val_a.tolist()) & set(train_a.tolist())
    assert sorted(val_a.tolist() + train_a.tolist()) == list(range(50000))


def test_val_images_are_not_in_train(cifar10):
    train, val = load_split(cifar10, "train", 32), load_split(cifar10, "val", 32)
    train_keys = {bytes(img.flatten()[:256].numpy()) for img in train.images}
    assert (
        sum(bytes(img.flatten()[:256].numpy()) in train_keys for img in val.images[:500]) <= 1
    )  # CIFAR has rare near-duplicates


def test_limit_takes_a_fixed_spread_subset(cifar10):
    a, b = load_split(cifar10, "test", 32, limit=300), load_split(cifar10, "test", 32, limit=300)
    assert len(a) == 300 and torch.equal(a.labels, b.labels)
    assert len(a.labels.unique()) == 10


@pytest.mark.parametrize("packed", [False, True])
def test_image_folder_and_archive_read_alike(tmp_path, packed):
    root = make_image_folder(tmp_path / "pets", test_name="val")
    data = root
    if packed:
        data = tmp_path / "pets.tar.gz"
        with tarfile.open(data, "w:gz") as tar:
            tar.add(root, arcname="pets")
    train, val, test = (load_split(str(data), s, 16) for s in ("train", "val", "test"))
    assert train.classes == ("cat", "dog", "owl")
    assert len(train) + len(val) == 18 and len(val) == 1 and len(test) == 6
    assert train.images.shape[1:] == (3, 16, 16)  # 20x12 images resized and centre-cropped
    red = torch.cat([train.images, val.images])[:, 0, 8, 8].float()
    labels = torch.cat([train.labels, val.labels]).float()
    assert torch.allclose(red, 60 * labels + 10, atol=2)  # the class colour survived decoding and ordering


def test_archive_listing_is_cached_and_a_damaged_one_listed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLCHAIN_CACHE", str(tmp_path / "cache"))
    root = make_image_folder(tmp_path / "pets", test_name="val")
    archive = tmp_path / "pets.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname="pets")
    walk = data._walk_tar
    first = open_source(str(archive))
    (listing,) = (tmp_path / "cache" / "datasets").glob("*.listing.json")

    def no_walk(tar, source):
        raise AssertionError("the archive was walked again")

    data._indexed.cache_clear()  # as a new process finds it
    monkeypatch.setattr(data, "_walk_tar", no_walk)
    assert open_source(str(archive)).members == first.members
    for damage in ("[[1, 2, 3]]", '{"half": '):
        listing.write_text(damage)
        data._indexed.cache_clear()
        monkeypatch.setattr(data, "_walk_tar", walk)
        assert open_source(str(archive)).members == first.members
        assert len(json.loads(listing.read_text())) > 18  # rewritten whole: files and folders
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("TOOLCHAIN_CACHE", str(blocked))
    data._indexed.cache_clear()
    assert open_source(str(archive)).members == first.members  # a plain .tar still opens without a cache


def test_archive_without_train_folder_is_refused(tmp_path):
    root = make_image_folder(tmp_path / "x")
    archive = tmp_path / "x.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root / "test", arcname="test")
    with pytest.raises(ToolchainError, match="no train/ images"):
        load_split(str(archive), "train", 16)


def test_missing_path_and_truncated_archive(tmp_path):
    with pytest.raises(ToolchainError, match="does not exist"):
        load_split(str(tmp_path / "nope"), "train", 32)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ToolchainError, match="cannot read archive"):
        load_split(str(broken), "train", 32)


def test_augment_keeps_shape_and_pixels():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8)
    out = augment_batch(images, g)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert not torch.equal(out, images)
    # every output is a window of its zero-padded input (pad 32 / 8 = 4), maybe mirrored: the pixels are the input's
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for image, augmented in zip(padded, out):
        windows = [image[:, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(augmented, w) or torch.equal(augmented, w.flip(-1)) for w in windows)


@pytest.mark.parametrize("streamed", [False, True], ids=["in memory", "streamed"])
def test_unreadable_files_are_skipped_and_counted_in_one_line(tmp_path, capsys, monkeypatch, streamed):
    from PIL import Image

    if streamed:
        monkeypatch.setattr("toolchain.data.MEMORY_BUDGET", 1000)  # nothing fits: every split streams
    root = make_image_folder(tmp_path / "d", per_class=(4, 2))
    (root / "test" / "cat" / "README.txt").write_text("notes, not an image")
    (root / "test" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.new("1", (20000, 20000)).save(root / "test" / "dog" / "bomb.png")  # 400 Mpx: a decompression bomb
    test = load_split(str(root), "test", 16)
    images, labels = test.materialize()
    assert len(images) == 6 and sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]  # the six real images, labelled
    err = " ".join(capsys.readouterr().err.split())
    assert "left out 1 files that are not images" in err and "2 images could not be decoded and were skipped" in err


def test_large_images_stream_with_random_resized_crops(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setattr("toolchain.data.MEMORY_BUDGET", 1000)
    root = make_image_folder(tmp_path / "d", per_class=(8, 2), size=(150, 100))
    rng = np.random.default_rng(0)
    for path in root.rglob("*.png"):  # textured photos, so that crops differ from the centre view
        Image.fromarray(rng.integers(0, 255, (100, 150, 3), dtype=np.uint8)).save(path)
    train = load_split(str(root), "train", 96)
    assert type(train).__name__ == "StreamedImages"
    seen = [x for x, _ in train.batches(4, augment=torch.Generator().manual_seed(0))]
    again = [x for x, _ in train.batches(4, augment=torch.Generator().manual_seed(0))]
    assert all(torch.equal(a, b) for a, b in zip(seen, again))  # crops follow the generator, not the workers
    plain = torch.cat([x for x, _ in train.batches(4)])
    assert plain.shape == (len(train), 3, 96, 96) and not torch.equal(torch.cat(seen), plain)


def _decoding_workers_mb() -> float:
    """Resident memory of this machine's DataLoader workers together."""
    total_kb = 0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == "pt_data_worker":
                status = (proc / "status").read_text().splitlines()
                total_kb += next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
        except (OSError, StopIteration):
            pass  # a process that ended meanwhile
    return total_kb / 1024


def test_decoding_workers_do_not_grow_batch_by_batch(tmp_path, monkeypatch):
    # Batches stacked on a worker's heap and then copied into shared memory to be sent left their heap copies
    # behind: a worker grew by about one batch per batch, over 1 GB in a 224-px training epoch.
    monkeypatch.setattr("toolchain.data.MEMORY_BUDGET", 1000)
    root = make_image_folder(tmp_path / "d", per_class=(16, 1))
    train = load_split(str(root), "train", 224)
    order = torch.arange(len(train)).repeat(64)  # a batch per train image, of 64 images: 9.6 MB each
    sampled = [_decoding_workers_mb() for _ in train.batches(64, order)]
    assert len(sampled) == len(train) > 30 and sampled[5] > 0
    assert sampled[-1] - sampled[5] < 100, sampled  # a batch per batch would be 250 MB or more

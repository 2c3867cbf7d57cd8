import os
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CIFAR10 = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
os.environ.setdefault("TOOLCHAIN_CIFAR10", str(DEFAULT_CIFAR10))
# The suite checks behaviour, not figures, and must pass beside other work (CI machines are shared): the host
# runner measures even when other processes keep the cores busy. tests/test_latency.py checks the refusal itself.
os.environ["TOOLCHAIN_ALLOW_BUSY"] = "1"


@pytest.fixture(scope="session")
def cifar10() -> str:
    """The DATA spec for the real CIFAR-10 archive; the tests that need it fail loudly when it is absent."""
    path = Path(os.environ["TOOLCHAIN_CIFAR10"])
    assert path.exists(), f"CIFAR-10 not found at {path}: set TOOLCHAIN_CIFAR10 to the ImageFolder archive"
    return "cifar10"


@pytest.fixture(scope="session")
def resnet20_table(tmp_path_factory) -> Path:
    """A complete host table for resnet20 (fp32, 1 thread), profiled once per test session: two whole-model
    conversions and 286 shapes are most of a minute on a slow CPU. Tests that run a subprocess on it take a copy."""
    from toolchain.export import to_model_file
    from toolchain.graph import analyze
    from toolchain.latency.profiler import profile
    from toolchain.latency.runners import LiteRTHostRunner
    from toolchain.latency.table import LatencyTable
    from toolchain.models import load_model
    from toolchain.surgery import pruned_copy

    path = tmp_path_factory.mktemp("tables") / "host.json"
    runner = LiteRTHostRunner()
    model = load_model("resnet20").model
    graph = analyze(model, 32)

    def build(keep):
        return to_model_file(pruned_copy(model, graph, keep), 32, "tflite")

    profile(graph, runner, LatencyTable.open(path, runner.target), build)
    return path


def make_image_folder(
    root: Path, classes=("cat", "dog", "owl"), per_class=(6, 2), size=(20, 12), test_name="test"
) -> Path:
    """A tiny ImageFolder tree of solid-colour PNGs whose colour encodes the class (so tests can check labels)."""
    for split, n in zip(("train", test_name), per_class):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", size, (60 * c + 10, i, 0)).save(folder / f"{i:04d}.png")
    return root

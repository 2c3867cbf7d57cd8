"""A user's own trained model and images, end to end: a torchvision, a timm and an own `module:factory` network,
each trained for a few steps by a plain PyTorch loop (not by toolchain) and saved as a state_dict, compressed on an
ImageFolder of CIFAR images upscaled to 96 px, and exported to a `.tflite` that computes what PyTorch computes."""

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from toolchain.cli import main
from toolchain.data import load_split, normalize

SIZE = 96


@pytest.fixture(scope="module")
def folder(tmp_path_factory, cifar10) -> Path:
    """CIFAR-10 images upscaled to 96 px as JPEG files: 30 train and 8 test images per class."""
    root = tmp_path_factory.mktemp("photos")
    for split, per_class in (("train", 30), ("test", 8)):
        images = load_split(cifar10, "train" if split == "train" else "test", 32)
        for c, name in enumerate(images.classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            picks = (images.labels == c).nonzero()[:per_class, 0]
            for i in picks.tolist():
                pixels = images.images[i].permute(1, 2, 0).numpy()
                Image.fromarray(pixels).resize((SIZE, SIZE), Image.BICUBIC).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def trained_state(model: nn.Module, folder: Path, steps: int = 3) -> dict:
    """A few SGD steps on the folder's images with a plain PyTorch loop, as a user's own script would train."""
    images = load_split(str(folder), "train", SIZE, 64)
    x = normalize(images.materialize()[0], (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), images.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval().state_dict()


def compress(tmp_path: Path, capsys, model: str, weights: Path, folder: Path, *extra: str) -> dict:
    argv = [
        "compress",
        "--model",
        model,
        "--weights",
        str(weights),
        "--data",
        str(folder),
        "--table",
        str(tmp_path / "host.json"),
        "--latency-ratio",
        "0.6",
        "--episodes",
        "3",
        "--warmup-episodes",
        "2",
        "--reward-images",
        "50",
        "--calibration-images",
        "50",
        "--finalists",
        "1",
        "--channel-multiple",
        "16",
        "--finetune-epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        "--json",
        *extra,
    ]
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def tflite_agrees_with_pytorch(result: dict, folder: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from toolchain.models import load_checkpoint

    final = load_checkpoint(result["checkpoint"])
    interpreter = Interpreter(model_path=result["model_file"])
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    images, _ = load_split(str(folder), "test", SIZE, 4).materialize()
    x = normalize(images, final.spec.mean, final.spec.std)
    with torch.no_grad():
        reference = final.model(x).numpy()
    for i in range(len(x)):
        interpreter.set_tensor(inp["index"], x[i : i + 1].permute(0, 2, 3, 1).numpy())
        interpreter.invoke()
        np.testing.assert_allclose(interpreter.get_tensor(out["index"])[0], reference[i], atol=2e-3, rtol=1e-3)


pytestmark = pytest.mark.slow


def test_torchvision_state_dict_in_a_wrapper_compresses_on_streamed_photos(tmp_path, capsys, folder, monkeypatch):
    import torchvision

    model = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10)
    state = trained_state(model, folder)
    weights = tmp_path / "mnv2.pth"  # as DataParallel training scripts save it
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, weights)
    monkeypatch.setattr("toolchain.data.MEMORY_BUDGET", 2**20)  # 1 MB: these photos stream through the workers
    result = compress(
        tmp_path,
        capsys,
        "torchvision:mobilenet_v2",
        weights,
        folder,
        "--model-args",
        '{"width_mult": 0.35}',
        "--input-size",
        str(SIZE),
    )
    assert result["predicted_ms"] <= result["budget_ms"] < result["unpruned_predicted_ms"]
    assert abs(result["top1_test_exported"] - result["top1_test_finetuned"]) <= 0.02
    tflite_agrees_with_pytorch(result, folder)
    sidecar = json.loads(Path(result["sidecar"]).read_text())
    assert sidecar["input"]["shape"] == [1, SIZE, SIZE, 3]
    assert sidecar["output"]["classes"][0] == "airplane"  # the class folders' names, recorded for later commands
    assert sidecar["input"]["normalization"]["mean"] == [0.485, 0.456, 0.406]


def test_timm_model_compresses_and_exports(tmp_path, capsys, folder):
    import timm

    model = timm.create_model("lcnet_050", pretrained=False, num_classes=10)
    weights = tmp_path / "lcnet.pth"
    torch.save(trained_state(model, folder), weights)
    result = compress(tmp_path, capsys, "timm:lcnet_050", weights, folder, "--input-size", str(SIZE))
    assert result["predicted_ms"] <= result["budget_ms"]
    tflite_agrees_with_pytorch(result, folder)


OWN_MODULE = '''
from torch import nn


class TinyNet(nn.Module):
    """A user's own network: width is a constructor argument, the head a linear layer."""

    def __init__(self, width: float = 1.0, num_classes: int = 10):
        super().__init__()
        c = int(32 * width)
        self.features = nn.Sequential(
            nn.Conv2d(3, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2 * c, num_classes)

    def forward(self, x):
        return self.head(self.features(x))
'''


def test_own_module_factory_with_model_args(tmp_path, capsys, folder, monkeypatch):
    (tmp_path / "mynets.py").write_text(textwrap.dedent(OWN_MODULE))
    monkeypatch.chdir(tmp_path)  # imported from the folder the command runs in
    monkeypatch.syspath_prepend(str(tmp_path))
    import mynets

    weights = tmp_path / "tiny.pth"
    torch.save(trained_state(mynets.TinyNet(width=0.5), folder), weights)
    result = compress(
        tmp_path, capsys, "mynets:TinyNet", weights, folder, "--model-args", '{"width": 0.5}', "--input-size", str(SIZE)
    )
    assert result["predicted_ms"] <= result["budget_ms"]
    tflite_agrees_with_pytorch(result, folder)
    # the checkpoint written after carries the architecture, its arguments, size and classes: no options needed
    assert main(["eval", "--model", result["checkpoint"], "--data", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["top1"] == pytest.approx(
        result["top1_test_finetuned"]
    )


def test_mobilenet_v1_searches_against_the_pixel1_table_without_the_phone(tmp_path, capsys, folder):
    """The AMC paper's own setting: MobileNetV1 under a Pixel 1 latency budget, priced by real Pixel 1
    measurements (the shipped table), with no phone attached; the file is exported but not measured."""
    from conftest import REPO

    table = REPO / "latency_tables" / "pixel1-pixel1-benchmark_model-fp32-t1.json"
    before = table.read_bytes()
    argv = [
        "compress",
        "--model",
        "mobilenet_v1",
        "--num-classes",
        "10",
        "--data",
        str(folder),
        "--table",
        str(table),
        "--latency-ms",
        "63.2",
        "--no-measure",
        "--episodes",
        "3",
        "--warmup-episodes",
        "2",
        "--reward-images",
        "20",
        "--calibration-images",
        "20",
        "--finalists",
        "1",
        "--limit",
        "20",
        "--out",
        str(tmp_path / "run"),
        "--json",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["measured_ms"] is None and result["predicted_ms"] <= 63.2 < result["unpruned_predicted_ms"]
    assert result["unpruned_predicted_ms"] == pytest.approx(123.16, rel=0.05)  # the logs' MobileNetV1 1.0 median
    assert "The file was not measured" in (tmp_path / "run" / "report.md").read_text()
    assert (
        Path(result["model_file"]).stat().st_size > 0 and table.read_bytes() == before
    )  # nothing measured, nothing written
    # the same run resumed, reported in words: the latency line says what was not measured instead of failing
    assert main([*argv[:-1], "--resume"]) == 0, capsys.readouterr().err
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("latency on"))
    assert "not measured (--no-measure)" in line and f"{result['predicted_ms']:.3f} ms predicted" in line

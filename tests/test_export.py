import json

import numpy as np
import pytest
import torch

from toolchain.cli import main
from toolchain.compress import _keep_export, _kept_export
from toolchain.data import load_split
from toolchain.errors import ToolchainError
from toolchain.export import ExportResult, Parity, ParityError, check_parity, export, read_metadata, to_tflite
from toolchain.models import load_model


@pytest.fixture(scope="module")
def resnet20_data(cifar10):
    loaded = load_model("resnet20")
    return loaded, load_split(cifar10, "test", 32, limit=300), load_split(cifar10, "train", 32, limit=200)


@pytest.mark.slow
@pytest.mark.parametrize(
    "model_format,precision", [("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8"), ("onnx", "fp32")]
)
def test_export_passes_its_parity_check_and_writes_the_sidecar(tmp_path, resnet20_data, model_format, precision):
    from ai_edge_litert.interpreter import Interpreter

    loaded, check, calibration = resnet20_data
    out = tmp_path / f"m.{model_format}"
    result = export(loaded.model, loaded.spec, out, model_format, precision, check, calibration)
    assert out.stat().st_size == result.size_bytes and result.parity.images == 300
    assert result.parity.top1_agreement >= {"fp32": 1.0, "fp16": 0.995, "int8": 0.98}[precision]
    sidecar = json.loads((tmp_path / "m.json").read_text())
    assert (tmp_path / "m.labels.txt").read_text().split() == list(loaded.spec.classes)
    assert sidecar["input"]["normalization"]["mean"] == list(loaded.spec.mean)
    if model_format == "tflite":
        interpreter = Interpreter(model_path=str(out))
        assert list(interpreter.get_input_details()[0]["shape"]) == [1, 32, 32, 3]  # NHWC, as cameras deliver
        assert sidecar["input"]["layout"] == "NHWC"
        embedded = read_metadata(out.read_bytes())  # the same app info travels inside the file
        assert embedded["output"]["classes"] == list(loaded.spec.classes) and embedded["input"] == sidecar["input"]
        if precision == "int8":
            assert sidecar["input"]["dtype"]["dtype"] == "int8" and sidecar["input"]["dtype"]["scale"] > 0
    else:
        assert sidecar["input"]["shape"] == [1, 3, 32, 32]


def test_parity_failures_are_errors_with_figures():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((100, 10)).astype(np.float32)
    labels = reference.argmax(1)
    check_parity(reference + 1e-6, reference, labels, "fp32")
    with pytest.raises(ParityError, match=r"fp32 model fails its parity check on 100 images: max \|logit diff\| 0.01"):
        check_parity(reference + 0.01, reference, labels, "fp32")
    shuffled = reference.copy()
    shuffled[:5] = shuffled[:5, ::-1]
    with pytest.raises(ParityError, match="top-1 agreement 9[0-9].00%"):
        check_parity(shuffled, reference, labels, "int8")


def test_export_refuses_impossible_requests(tmp_path, resnet20_data, capsys, cifar10):
    loaded, check, _ = resnet20_data
    with pytest.raises(ToolchainError, match="ONNX export is fp32 only"):
        export(loaded.model, loaded.spec, tmp_path / "m.onnx", "onnx", "int8", check)
    with pytest.raises(ToolchainError, match="needs calibration images"):
        export(loaded.model, loaded.spec, tmp_path / "m.tflite", "tflite", "int8", check, None)
    with pytest.raises(ToolchainError, match="m.json does not end in .tflite"):  # it would clash with the sidecar
        export(loaded.model, loaded.spec, tmp_path / "m.json", "tflite", "fp32", check)
    assert not list(tmp_path.iterdir())
    assert main(["export", "--model", "resnet20", "--out", str(tmp_path / "m.tflite")]) == 2
    assert "pass --data" in capsys.readouterr().err


class Spectrum(torch.nn.Module):
    """A 2-D FFT: runs in PyTorch, but the TFLite converter supports only 1-D FFTs."""

    def forward(self, x):
        return torch.fft.rfft2(x).abs()


class WithSpectrum(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.spectrum = Spectrum()
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.spectrum(self.conv(x)).mean((2, 3)))


@pytest.mark.slow
def test_an_op_the_converter_cannot_handle_is_named_by_module(tmp_path, capsys):
    with pytest.raises(ToolchainError) as excinfo:
        to_tflite(WithSpectrum().eval(), 16)
    message = str(excinfo.value)
    assert "module spectrum (Spectrum) of WithSpectrum" in message and "\n" not in message


def test_unwritable_output_is_a_one_line_error(tmp_path, resnet20_data):
    loaded, check, _ = resnet20_data
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(ToolchainError, match="cannot write .* is a file, not a folder; choose another path"):
        export(loaded.model, loaded.spec, blocked / "m.onnx", "onnx", "fp32", check.subset(slice(0, 20)))


def test_a_resumed_run_reads_an_export_back_only_while_the_file_is_the_one_it_wrote(tmp_path):
    model, sidecar, labels = (tmp_path / name for name in ("m-pruned.tflite", "m-pruned.json", "m.labels.txt"))
    for path in (model, sidecar, labels):
        path.write_text("attempt 1")
    exported = ExportResult(
        str(model), "tflite", "int8", 9, Parity(10, 0.1, 5.0, 1.0, 0.8, 0.8), str(sidecar), str(labels)
    )
    record = tmp_path / "exported.json"
    _keep_export(record, exported)
    assert _kept_export(record, model) == exported
    assert _kept_export(record, tmp_path / "other.tflite") is None  # another run's path
    model.write_text("attempt 2")  # every --enforce-measured attempt writes the same file
    assert _kept_export(record, model) is None
    model.write_text("attempt 1")
    labels.unlink()
    assert _kept_export(record, model) is None

import json
import subprocess
import sys

import pytest

from conftest import make_image_folder
from toolchain.cli import main


def run_json(capsys, *argv) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def run_error(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


def test_zoo_lists_every_model_with_facts(capsys):
    out = run_json(capsys, "zoo")
    rows = {r["name"]: r for r in out["models"]}
    assert {"resnet20", "plain20", "resnet56", "mobilenet_v2_cifar", "vgg11_cifar"} <= set(rows)
    assert rows["resnet20"]["params"] == 272474 and rows["resnet20"]["macs"] > 40e6


def test_train_then_eval_round_trip_on_a_tiny_folder(tmp_path, capsys):
    data = str(make_image_folder(tmp_path / "d", per_class=(20, 4), size=(32, 32)))
    ckpt = tmp_path / "m.pt"
    out = run_json(capsys, "train", "--model", "resnet20", "--num-classes", "3", "--data", data, "--epochs", "2",
                   "--batch-size", "16", "--out", str(ckpt))
    assert ckpt.is_file() and out["epochs"] == 2 and 0 <= out["top1_test"] <= 1
    assert not (tmp_path / ".m.pt.resume").exists()  # the resume point is removed once the checkpoint exists
    evaluated = run_json(capsys, "eval", "--model", str(ckpt), "--data", data)
    assert evaluated["n"] == 12 and evaluated["top1"] == pytest.approx(out["top1_test"])


def test_class_count_mismatch_is_one_line(tmp_path, capsys):
    data = str(make_image_folder(tmp_path / "d", per_class=(10, 2)))
    assert "--num-classes 3" in run_error(capsys, "eval", "--model", "resnet20", "--data", data)
    assert "--num-classes 3" in run_error(capsys, "train", "--model", "resnet20", "--data", data, "--out", str(tmp_path / "x.pt"))


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    assert "plain20" in run_error(capsys, "eval", "--model", "resnet99", "--data", "cifar10")
    assert "does not exist" in run_error(capsys, "eval", "--model", str(tmp_path / "m.pt"), "--data", "cifar10")
    assert "does not exist" in run_error(capsys, "eval", "--model", "resnet20", "--data", str(tmp_path / "none"))


def test_bench_times_an_exported_file_and_refuses_the_wrong_format(tmp_path, capsys):
    from toolchain.latency.signature import OpSignature
    from toolchain.latency.tflite import single_op_model

    model = tmp_path / "conv.tflite"
    model.write_bytes(single_op_model(OpSignature("CONV_2D", 16, 16, 8, 8, 3, 1, "SAME", "RELU")))
    out = run_json(capsys, "bench", str(model), "--runs", "20", "--repeats", "2")
    assert out["runs"] == 20 and 0 < out["p10_ms"] <= out["median_ms"] <= out["p90_ms"]
    assert "times onnx files" in run_error(capsys, "bench", str(model), "--device", "host-ort")
    assert "unknown device 'nokia'" in run_error(capsys, "bench", str(model), "--device", "nokia")


def test_devices_without_a_phone_says_how_to_attach_one(capsys):
    assert run_json(capsys, "devices")["devices"] == []


def test_console_script_prints_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "toolchain.cli", "eval", "--model", "nope", "--data", "cifar10"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: unknown model 'nope'")

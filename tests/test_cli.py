import json
import subprocess
import sys

import pytest
from conftest import make_image_folder

from toolchain.cli import build_parser, main, pipeline_config


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
    out = run_json(
        capsys,
        "train",
        "--model",
        "resnet20",
        "--num-classes",
        "3",
        "--data",
        data,
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--out",
        str(ckpt),
    )
    assert ckpt.is_file() and out["epochs"] == 2 and 0 <= out["top1_test"] <= 1
    assert not (tmp_path / ".m.pt.resume").exists()  # the resume point is removed once the checkpoint exists
    evaluated = run_json(capsys, "eval", "--model", str(ckpt), "--data", data)
    assert evaluated["n"] == 12 and evaluated["top1"] == pytest.approx(out["top1_test"])


def test_bf16_training_runs_the_network_in_bfloat16_and_keeps_fp32_weights(tmp_path):
    import torch

    from toolchain.data import load_split
    from toolchain.models import load_model
    from toolchain.train import TrainConfig, train

    images = load_split(str(make_image_folder(tmp_path / "d", per_class=(8, 2), size=(32, 32))), "train", 32)
    loaded = load_model("resnet20", num_classes=3, pretrained=False)
    before = loaded.model.fc.weight.detach().clone()
    seen = []
    loaded.model.fc.register_forward_hook(lambda m, i, out: seen.append(out.dtype) if m.training else None)
    train(loaded.model, loaded.spec, images, TrainConfig(epochs=1, batch_size=8, bf16=True))
    assert seen and set(seen) == {torch.bfloat16}
    assert loaded.model.fc.weight.dtype == torch.float32 and not torch.equal(loaded.model.fc.weight, before)


def test_a_batch_larger_than_a_pass_accumulates_to_the_same_step(tmp_path, monkeypatch):
    """At large inputs a training batch runs as several passes (memory stays flat); without BatchNorm, whose
    statistics are per pass, the step is the one a single pass takes."""
    import torch
    from torch import nn

    from toolchain import train as training
    from toolchain.data import load_split
    from toolchain.models import load_model

    images = load_split(str(make_image_folder(tmp_path / "d", per_class=(6, 2), size=(32, 32))), "train", 32)
    spec = load_model("resnet20", num_classes=3, pretrained=False).spec
    cfg = training.TrainConfig(epochs=1, batch_size=len(images), lr=0.5, warmup_epochs=0, weight_decay=5e-4)

    def one_step(images_per_pass_at_32px: int) -> tuple[nn.Module, int]:
        monkeypatch.setattr(training, "TRAINING_AT_32PX", images_per_pass_at_32px)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        model.append(nn.Linear(8, 3))
        passes = []
        model[0].register_forward_hook(lambda m, i, out: passes.append(len(out)))
        training.train(model, spec, images, cfg)
        return model, len(passes)

    whole, one = one_step(len(images))
    split, several = one_step(4)
    assert (one, several) == (1, -(-len(images) // 4))
    for a, b in zip(whole.parameters(), split.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)  # summed in another order
    torch.manual_seed(0)
    assert not torch.allclose(nn.Conv2d(3, 8, 3, padding=1).weight, whole[0].weight, atol=1e-3)  # it did step


def test_killed_training_resumes_to_the_same_weights_and_refuses_other_settings(tmp_path):
    from dataclasses import replace

    import torch

    from toolchain.data import load_split
    from toolchain.errors import ToolchainError
    from toolchain.models import load_model
    from toolchain.train import TrainConfig, train

    images = load_split(str(make_image_folder(tmp_path / "d", per_class=(20, 4), size=(32, 32))), "train", 32)
    cfg, resume = TrainConfig(epochs=2, batch_size=16, seed=1), tmp_path / ".run.resume"

    def fresh():
        torch.manual_seed(0)
        return load_model("resnet20", num_classes=3, pretrained=False)

    def killed_after_the_first_epoch(result):
        if result.epoch == 1:
            raise KeyboardInterrupt

    straight = fresh()
    train(straight.model, straight.spec, images, cfg)
    with pytest.raises(KeyboardInterrupt):
        train(fresh().model, straight.spec, images, cfg, resume_path=resume, on_epoch=killed_after_the_first_epoch)
    resumed = fresh()
    epochs_run = []
    history = train(
        resumed.model, resumed.spec, images, cfg, resume_path=resume, on_epoch=lambda r: epochs_run.append(r.epoch)
    )
    assert epochs_run == [2] and [h.epoch for h in history] == [1, 2]
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    with pytest.raises(ToolchainError, match=r"epochs 2 -> 3\): rerun with those to continue it, or delete"):
        train(fresh().model, straight.spec, images, replace(cfg, epochs=3), resume_path=resume)


def test_bad_numbers_are_one_line_errors_before_any_work(capsys):
    compress = ["compress", "--model", "resnet20", "--data", "/nowhere"]  # data that would fail if it were read
    for argv, message in (
        ([*compress, "--latency-ratio", "1"], "--latency-ratio 1.0 is out of range"),
        ([*compress, "--latency-ms", "nan"], "--latency-ms nan is not a latency"),
        ([*compress, "--latency-ratio", "0.5", "--episodes", "0"], "episodes"),
        ([*compress, "--latency-ratio", "0.5", "--sigma", "nan"], "--sigma nan"),
        ([*compress, "--latency-ratio", "0.5", "--actor-margin", "-1"], "actor margin -1.0 must be above 0"),
        ([*compress, "--latency-ratio", "0.5", "--lbound", "0.9", "--rbound", "0.5"], "0 < lbound <= rbound"),
        ([*compress, "--latency-ratio", "0.5", "--seed", str(2**70)], "--seed"),
        ([*compress, "--stages", "0.5,0.6"], "must be decreasing fractions"),
        (
            ["train", "--model", "resnet20", "--data", "/nowhere", "--out", "x.pt", "--weight-decay", "nan"],
            "weight decay nan",
        ),
        (["eval", "--model", "resnet20", "--data", "/nowhere", "--input-size", "30000"], "--input-size 30000"),
        (["bench", "m.tflite", "--repeats", "0"], "--repeats 0"),
        (["profile", "--model", "resnet20", "--channel-step", "0"], "--channel-step 0"),
    ):
        assert message in run_error(capsys, *argv), argv


def test_actor_margin_overrides_the_preset_or_turns_the_pull_off():
    def margin(*extra: str) -> float | None:
        args = build_parser().parse_args(
            ["compress", "--model", "resnet20", "--data", "cifar10", "--latency-ratio", "0.5", *extra]
        )
        return pipeline_config(args).search.agent.actor_margin

    assert margin() is None and margin("--agent", "many-updates") == 4.0
    assert margin("--actor-margin", "2.5") == 2.5 and margin("--agent", "many-updates", "--actor-margin", "off") is None
    assert margin("--agent", "paper", "--actor-margin", "3") == 3.0


def test_argparse_errors_are_one_line_pointing_at_the_help(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["compress", "--model", "resnet20", "--data", "cifar10", "--episodes", "x"])
    err = capsys.readouterr().err.strip()
    assert exit.value.code == 2 and len(err.splitlines()) == 1
    assert "--episodes: invalid int value: 'x'" in err and "toolchain compress --help" in err
    with pytest.raises(SystemExit):
        main(["compress", "--model", "resnet20", "--data", "cifar10", "--actor-margin", "wide"])
    assert "'wide' is not a number or `off`, e.g. 4" in capsys.readouterr().err


def test_class_count_mismatch_is_one_line(tmp_path, capsys):
    data = str(make_image_folder(tmp_path / "d", per_class=(10, 2)))
    assert "--num-classes 3" in run_error(capsys, "eval", "--model", "resnet20", "--data", data)
    assert "--num-classes 3" in run_error(
        capsys, "train", "--model", "resnet20", "--data", data, "--out", str(tmp_path / "x.pt")
    )


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
    (tmp_path / "bad.tflite").write_bytes(b"not a model")
    assert "litert cannot load the model" in run_error(capsys, "bench", str(tmp_path / "bad.tflite"))
    assert "is a folder" in run_error(capsys, "predict", "--model", "resnet20", "--table", str(tmp_path))


def test_devices_without_a_phone_says_how_to_attach_one(capsys, monkeypatch):
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    assert run_json(capsys, "devices")["devices"] == []
    assert main(["devices"]) == 0
    assert "plug in a phone with USB debugging on, or pass --serial HOST:PORT" in capsys.readouterr().out


def test_console_script_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "toolchain.cli", "eval", "--model", "nope", "--data", "cifar10"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: unknown model 'nope'")

"""The whole `compress` pipeline on resnet20 with tiny subsets: search, prune, fine-tune, export, measure, report;
iterative stages; --enforce-measured when the target runs slower than its table predicts; torchrun data-parallel."""

import csv
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from toolchain.compress import (
    Budget,
    NormalizedBatches,
    PipelineConfig,
    SearchConfig,
    bn_batches,
    compress,
    search_and_prune,
)
from toolchain.data import load_split, normalize
from toolchain.export import to_model_file
from toolchain.files import write_atomic
from toolchain.graph import analyze
from toolchain.latency.predictor import LatencyPredictor
from toolchain.latency.runners import LiteRTHostRunner, Timing, best_of
from toolchain.latency.table import LatencyTable
from toolchain.layout import RunLayout
from toolchain.models import create_model, load_checkpoint, load_model
from toolchain.policy import round_channels
from toolchain.search.ddpg import MANY_UPDATES, DDPGConfig
from toolchain.search.env import EnvConfig

pytestmark = pytest.mark.slow
TINY = dict(episodes=3, agent=DDPGConfig(warmup_episodes=2), reward_images=100, calibration_images=100, finalists=1)


@pytest.fixture(scope="module")
def resnet20():
    return load_model("resnet20")


def png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compress_cli_fine_tunes_exports_measures_and_reports(tmp_path, capsys, monkeypatch, cifar10, resnet20_table):
    from ai_edge_litert.interpreter import Interpreter

    from toolchain.cli import main

    out = tmp_path / "run"
    args = [
        "compress",
        "--model",
        "resnet20",
        "--data",
        cifar10,
        "--table",
        str(resnet20_table),
        "--latency-ratio",
        "0.6",
        "--episodes",
        "3",
        "--warmup-episodes",
        "2",
        "--reward-images",
        "100",
        "--calibration-images",
        "100",
        "--finalists",
        "2",
        "--finetune-epochs",
        "1",
        "--distill",
        "0.5",
        "--reward",
        "select",  # L1 selection alone leaves the pruned model far below what fine-tuning restores
        "--limit",
        "300",
        "--out",
        str(out),
        "--json",
    ]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["predicted_ms"] <= result["budget_ms"] < result["unpruned_predicted_ms"]
    assert result["within_budget"] == (result["measured_ms"] <= result["budget_ms"])
    # one epoch on 300 images helps a pruned model that lost most of its accuracy
    assert result["top1_test_finetuned"] > result["top1_test_pruned"]
    assert abs(result["top1_test_exported"] - result["top1_test_finetuned"]) <= 0.01
    finetuned = load_checkpoint(out / "finetuned.pt")
    assert finetuned.metrics["top1_test"] == result["top1_test_finetuned"]
    assert finetuned.metrics["train_config"]["distill"] == 0.5
    assert [g["keep"] for g in finetuned.spec.policy["groups"]] == result["keep"]

    # the .tflite takes NHWC images and computes what the fine-tuned checkpoint computes
    interpreter = Interpreter(model_path=result["model_file"])
    interpreter.allocate_tensors()
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert list(inp["shape"]) == [1, 32, 32, 3]
    images = load_split(cifar10, "test", 32, 8)
    x = normalize(images.images, finetuned.spec.mean, finetuned.spec.std)
    reference = finetuned.model(x).detach().numpy()
    for i in range(len(images)):
        interpreter.set_tensor(inp["index"], x[i : i + 1].permute(0, 2, 3, 1).numpy())
        interpreter.invoke()
        np.testing.assert_allclose(interpreter.get_tensor(outp["index"])[0], reference[i], atol=1e-3)

    report = (out / "report.md").read_text()
    for figure in (
        f"{result['budget_ms']:.3f} ms",
        f"{result['measured_ms']:.3f} ms",
        f"{100 * result['top1_test_finetuned']:.2f}%",
    ):
        assert figure in report
    assert all(png(out / name) for name in ("policy.png", "search.png", "tradeoff.png"))
    sidecar = json.loads(Path(result["sidecar"]).read_text())
    assert sidecar["input"]["layout"] == "NHWC" and sidecar["pruning_policy"]["groups"][0]["keep"] == result["keep"][0]

    # the unpruned model's file, as timed for the speed-up, is kept beside the pruned one
    unpruned = Interpreter(model_path=str(out / "resnet20-unpruned.tflite"))
    assert list(unpruned.get_input_details()[0]["shape"]) == [1, 32, 32, 3]

    # a finished run resumes to the same answer without searching or fine-tuning again, at the prices its search
    # had: a second check of the table could tip the other way on a noisy target and move the budget. Neither it
    # nor the refusals below convert the unpruned or the pruned model again.
    def converted_again(*args, **kwargs):
        raise AssertionError("a model was converted again")

    monkeypatch.setattr("toolchain.compress.to_model_file", converted_again)
    monkeypatch.setattr("toolchain.export.to_model_file", converted_again)
    assert main([*args, "--resume"]) == 0
    resumed = capsys.readouterr()
    again = json.loads(resumed.out.strip().splitlines()[-1])
    assert "kept from when this run started" in resumed.err
    assert "resnet20-pruned.tflite exported and checked when this run started: kept" in resumed.err
    assert again["keep"] == result["keep"] and again["top1_test_finetuned"] == result["top1_test_finetuned"]
    assert again["top1_test_exported"] == result["top1_test_exported"] and again["model_file"] == result["model_file"]
    assert again["measured_ms"] == result["measured_ms"]  # replayed, not timed again
    assert main([a if a != "0.6" else "0.01" for a in args]) == 2
    assert "already holds a search" in capsys.readouterr().err
    assert main([*args, "--resume", "--lbound", "0.3"]) == 2  # continuing with other settings would mix two searches
    assert "was started with other settings (env.lbound 0.2 -> 0.3)" in capsys.readouterr().err
    # a setting that came in after the run started (here the actor's margin) is not known to have held in it
    (settings,) = out.rglob("config.json")
    recorded = json.loads(settings.read_text())
    write_atomic(settings, json.dumps({k: v for k, v in recorded.items() if k != "agent.actor_margin"}))
    assert main([*args, "--resume"]) == 2
    assert "(agent.actor_margin (not recorded) -> None)" in capsys.readouterr().err
    # a run started under another preset (here as if the default had changed since) is told the flag that continues it
    many_updates = {f"agent.{k}": v for k, v in asdict(MANY_UPDATES).items()}
    write_atomic(settings, json.dumps({**recorded, **many_updates}))
    assert main([*args, "--resume"]) == 2
    assert "rerun with those (--agent many-updates for the agent.* ones) to continue it" in capsys.readouterr().err
    # BatchNorm images drawn another way would re-estimate every policy's statistics on other images
    write_atomic(settings, json.dumps(recorded))
    assert main([*args, "--resume", "--bn-plain"]) == 2
    assert "(bn_augment True -> False)" in capsys.readouterr().err
    write_atomic(settings, json.dumps(recorded))
    assert main([*(a if a != "0.6" else "0.4" for a in args), "--resume"]) == 2  # or under another budget
    assert "searched under a" in capsys.readouterr().err


def test_stages_prune_iteratively_from_the_previous_stage(tmp_path, cifar10, resnet20, resnet20_table):
    config = PipelineConfig(SearchConfig(cifar10, **TINY), stages=(0.7, 0.5), limit=200)
    result = compress(resnet20, LiteRTHostRunner(), resnet20_table, config, tmp_path)
    assert result is not None and len(result.stages) == 2
    first, second = (stage.search for stage in result.stages)
    # the table is checked once, by the first stage: a second check could rescale or re-measure it when the
    # machine's speed drifts in between, and move the second stage's basis
    assert first.table_check is not None and second.table_check is first.table_check
    assert first.budget_ms == pytest.approx(0.7 * first.start_ms) and second.budget_ms == pytest.approx(
        0.5 * first.start_ms
    )
    # stage 2 starts from stage 1's model, predicted on the same basis (the unpruned architecture's table entries)
    assert second.start_ms == pytest.approx(first.best.latency_ms, rel=1e-9)
    assert all(b <= a for a, b in zip(first.best.keep, second.best.keep))
    final = load_checkpoint(tmp_path / "stage-2" / "pruned.pt")  # replays from the unpruned architecture
    assert [g["keep"] for g in final.spec.policy["groups"]] == list(second.best.keep)
    assert [g["channels"] for g in final.spec.policy["groups"]] == list(analyze(resnet20.model, 32).channels)
    assert "## Stages" in (tmp_path / "report.md").read_text()


def test_accuracy_protocol_searches_without_a_wall_for_its_own_reward(tmp_path, cifar10, resnet20, resnet20_table):
    config = PipelineConfig(
        SearchConfig(cifar10, env=EnvConfig(protocol="accuracy"), **TINY), Budget(ratio=0.6), limit=100
    )
    result = compress(resnet20, LiteRTHostRunner(), resnet20_table, config, tmp_path)
    with open(tmp_path / "search.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    for row in rows:  # the reward trades error against latency instead of holding latency under the budget
        assert float(row["reward"]) == pytest.approx(
            -(1 - float(row["accuracy"])) * np.log(float(row["latency_ms"]) * 1e3), abs=1e-5
        )
    assert result.final.search.best.reward == pytest.approx(
        -(1 - result.final.search.best.accuracy) * np.log(result.final.search.best.latency_ms * 1e3)
    )


class SlowerThanItsTable:
    """The host runner, with whole models taking `factor` times as long as the table predicts: a target whose
    single-op table misses something (caches, thermal state) that the whole model pays for. Every call also times
    the unpruned model and scales against it, so the factor holds at the host's speed of that moment: a shared
    machine's speed drifts, and a factor fixed once, in a slow spell, left the 'slower' target within budget."""

    def __init__(self, factor: float, table: Path, model):
        self.runner = LiteRTHostRunner()
        self.unpruned = to_model_file(model, 32, "tflite")
        self.predicted = factor * LatencyPredictor(analyze(model, 32), LatencyTable.load(table)).predict()
        self.target, self.model_format = self.runner.target, self.runner.model_format

    def time_models(self, models):
        timings = self.runner.time_models(list(models) + [self.unpruned] * 3)
        f = self.predicted / min(t.median_ms for t in timings[len(models) :])
        return [Timing(t.median_ms * f, t.p10_ms * f, t.p90_ms * f, t.runs) for t in timings[: len(models)]]


class NeverTimes:
    """A runner for `target` that fails if asked to time anything."""

    model_format = "tflite"

    def __init__(self, target):
        self.target = target

    def time_models(self, models):
        raise AssertionError("timed again")


def test_enforce_measured_tightens_the_budget_until_the_target_meets_it(tmp_path, cifar10, resnet20, resnet20_table):
    # uniform, under a budget just above its rung at 0.7 (8, 24 and 48 of 16, 32 and 64 channels; the next rung
    # keeps all 16 and is 1.4-1.5x dearer): the model it picks is predicted at 98-100% of the budget on any
    # machine's table, so 1.5x slower is surely over it, while the smallest model the settings allow (0.2-0.35 of
    # the unpruned prediction) is far enough under it for a tightened search to reach.
    # The table is trusted as it is: checking it first would find the factor and scale the search by it.
    graph, env = analyze(resnet20.model, 32), EnvConfig()
    predictor = LatencyPredictor(graph, LatencyTable.load(resnet20_table))
    rung = [round_channels(0.7, c, env.multiple, env.floor) for c in graph.channels]
    ratio = 1.02 * predictor.predict(rung) / predictor.predict()
    config = PipelineConfig(
        SearchConfig(cifar10, strategy="uniform", trust_table=True, **TINY), Budget(ratio=ratio), limit=200
    )
    slower = SlowerThanItsTable(1.5, resnet20_table, resnet20.model)
    over = compress(resnet20, slower, resnet20_table, config, tmp_path / "plain")
    assert over is not None and not over.within_budget and over.attempts == 1
    assert "exceeds the budget" in (tmp_path / "plain" / "report.md").read_text()

    enforced = compress(resnet20, slower, resnet20_table, replace(config, enforce_measured=True), tmp_path / "enforced")
    assert enforced is not None and enforced.within_budget and enforced.attempts >= 2
    assert enforced.budget_ms == pytest.approx(
        ratio * enforced.unpruned_predicted_ms
    )  # the budget to meet stays the user's
    assert enforced.final.search.budget_ms < enforced.budget_ms / 1.2  # what the last search aimed at
    assert (tmp_path / "enforced" / "attempt-2" / "best_policy.json").exists()

    # resumed, every attempt replays the timings it had: timed again, the noise would move the later attempts'
    # budgets (the resume check refuses a budget more than 10% away from the one a search ran under)
    resumed = compress(
        resnet20,
        NeverTimes(slower.target),
        resnet20_table,
        replace(config, enforce_measured=True),
        tmp_path / "enforced",
        resume=True,
    )
    assert resumed is not None and resumed.attempts == enforced.attempts
    assert (resumed.measured, resumed.unpruned_measured) == (enforced.measured, enforced.unpruned_measured)
    assert resumed.final.search.budget_ms == enforced.final.search.budget_ms
    exported_policy = json.loads(Path(resumed.exported.sidecar).read_text())["pruning_policy"]
    assert exported_policy == load_checkpoint(resumed.final.checkpoint).spec.policy  # the last attempt's model


def test_train_under_torchrun_is_data_parallel_over_two_processes(tmp_path, cifar10):
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "toolchain.cli",
            "train",
            "--model",
            "resnet20",
            "--data",
            cifar10,
            "--epochs",
            "1",
            "--limit",
            "256",
            "--batch-size",
            "64",
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # only rank 0 reports
    result = json.loads(lines[0])
    assert result["processes"] == 2
    stderr = " ".join(proc.stderr.split())  # rich wraps lines at the terminal width
    assert "data-parallel over 2 processes" in stderr
    assert " 4/4 " in stderr  # 256 images in global batches of 64: each process takes 32 per step, 4 steps in all
    trained = load_checkpoint(out)
    assert trained.metrics["processes"] == 2 and trained.metrics["test_images"] == 256


def test_compress_under_torchrun_searches_on_rank_0_and_fine_tunes_on_both_processes(tmp_path, cifar10, resnet20_table):
    # A table whose whole-model calibration says 2x faster than the host runs: the first result is over budget,
    # so --enforce-measured makes both processes search (rank 0) and fine-tune (both) a second time. The margin is
    # wide (uniform's pick at 0.8 is 0.57-0.76 of the unpruned prediction, by machine) because the session's
    # table was profiled minutes ago, and the host's speed drifts.
    optimistic = json.loads(resnet20_table.read_text())
    for calibration in optimistic["models"].values():
        calibration["measured_ms"] = [ms / 2 for ms in calibration["measured_ms"]]
    (tmp_path / "optimistic.json").write_text(json.dumps(optimistic))
    out = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "toolchain.cli",
            "compress",
            "--model",
            "resnet20",
            "--data",
            cifar10,
            "--table",
            str(tmp_path / "optimistic.json"),
            "--latency-ratio",
            "0.8",
            "--strategy",
            "uniform",
            "--enforce-measured",
            "--trust-table",  # the check would find the optimistic calibration and measure it again
            "--episodes",
            "3",
            "--warmup-episodes",
            "2",
            "--reward-images",
            "100",
            "--calibration-images",
            "100",
            "--finalists",
            "1",
            "--finetune-epochs",
            "1",
            "--limit",
            "256",
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 0 reports
    result = json.loads(lines[0])
    assert result["attempts"] >= 2
    assert (out / "search.csv").exists() and (out / "attempt-2" / "search.csv").exists()
    assert " 2/2 " in " ".join(proc.stderr.split())  # 256 images, global batch 128: 64 per process per step
    assert (
        load_checkpoint(out / f"attempt-{result['attempts']}" / "finetuned.pt").metrics["top1_test"]
        == result["top1_test_finetuned"]
    )


def test_a_table_twice_as_slow_as_the_target_is_caught_and_the_search_prices_models_at_the_targets_speed(
    tmp_path, capsys, cifar10, resnet20_table
):
    """Every entry doubled (a table from a slower machine or a hot phone): the check finds one factor explains it,
    scales the run's predictions by it, so that the search aims at the budget instead of half of it. On a busy
    machine two of the re-timed entries can stray past the tolerance; then the check measures the shapes again
    (`verdict`'s own tests pin that rule), which is also right."""
    from toolchain.cli import main

    drifted = json.loads(resnet20_table.read_text())
    for entry in drifted["entries"].values():
        for key in ("median_ms", "p10_ms", "p90_ms"):
            entry[key] *= 2
    (tmp_path / "drifted.json").write_text(json.dumps(drifted))
    # timed as the check and the final measurement time whole models, so that a slow spell cannot set the budget
    unpruned = best_of(LiteRTHostRunner(), to_model_file(load_model("resnet20").model, 32, "tflite")).median_ms
    budget = 0.6 * unpruned
    out = tmp_path / "run"
    argv = [
        "compress",
        "--model",
        "resnet20",
        "--data",
        cifar10,
        "--table",
        str(tmp_path / "drifted.json"),
        "--latency-ms",
        f"{budget:.4f}",
        "--strategy",
        "uniform",
        "--reward-images",
        "100",
        "--calibration-images",
        "100",
        "--finalists",
        "1",
        "--limit",
        "100",
        "--out",
        str(out),
        "--json",
    ]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = (out / "report.md").read_text()
    scaled = re.search(r"off by one factor.*scaled by ([0-9.]+)", report)
    assert scaled or "off unevenly" in report, report
    # A shared machine drifts 20-30% for minutes between the timings of this test (the budget's, the check's, the
    # file's), so the bounds leave room for that: the run prices models at the target's speed, not at the doubled
    # table's. Where the file then lands against the budget is the drift experiment's (benchmarks/table_check.py).
    assert not scaled or 0.4 <= float(scaled.group(1)) <= 0.65, scaled.group(0)
    assert 0.7 <= result["unpruned_predicted_ms"] / unpruned <= 1.4, (result["unpruned_predicted_ms"], unpruned)
    assert result["predicted_ms"] <= budget


def test_bn_statistics_from_augmented_images_keep_the_trained_model_whole(cifar10):
    """The zoo's statistics were gathered on augmented images: re-estimated on plain ones they cost the unpruned
    model points before any channel is cut, on augmented ones (one fixed draw, alike on every read) hardly any."""
    import torch

    from toolchain.evaluate import evaluate
    from toolchain.prune import apply_policy

    loaded = load_model("resnet20")
    augmented = bn_batches(loaded, cifar10, 500, augment=True)
    again = bn_batches(loaded, cifar10, 500, augment=True)
    plain = bn_batches(loaded, cifar10, 500, augment=False)
    assert all(torch.equal(a, b) for a, b in zip(augmented.batches, again.batches))
    assert not torch.equal(augmented.batches[0], plain.batches[0])
    graph, val = analyze(loaded.model, 32), load_split(cifar10, "val", 32, 1000)
    trained = evaluate(loaded.model, loaded.spec, val)
    top1 = {
        name: evaluate(apply_policy(loaded.model, graph, graph.channels, bn_batches=b), loaded.spec, val)
        for name, b in (("plain", plain), ("augmented", augmented))
    }
    assert top1["augmented"] >= top1["plain"] + 0.02 and top1["augmented"] >= trained - 0.01, (trained, top1)


def test_the_search_re_estimates_batchnorm_on_augmented_images_unless_told_plain(
    tmp_path, cifar10, resnet20, resnet20_table
):
    import torch

    from toolchain.prune import apply_policy

    graph = analyze(resnet20.model, 32)
    statistics = {}
    for augment in (True, False):
        config = SearchConfig(cifar10, strategy="uniform", reward="bn", bn_images=100, bn_augment=augment, **TINY)
        layout = RunLayout(tmp_path / f"augment-{augment}")
        outcome = search_and_prune(resnet20, None, resnet20_table, config, Budget(ratio=0.6), layout)
        saved = load_checkpoint(layout.pruned).model.state_dict()
        norms = bn_batches(resnet20, cifar10, 100, augment=augment)
        expected = apply_policy(resnet20.model, graph, outcome.policy.keep, bn_batches=norms).state_dict()
        statistics[augment] = {k: v for k, v in saved.items() if "running_" in k}
        for k, v in statistics[augment].items():
            torch.testing.assert_close(v, expected[k], rtol=1e-5, atol=1e-6)
    assert statistics[True].keys() == statistics[False].keys()
    assert any(not torch.allclose(statistics[True][k], statistics[False][k]) for k in statistics[True])


def test_bn_images_are_normalised_as_read_and_none_leave_batchnorm_alone():
    import torch

    from toolchain.prune import apply_policy

    images = torch.randint(0, 256, (2, 4, 3, 32, 32), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    batches = NormalizedBatches(tuple(images), mean, std)
    read = list(batches)
    assert len(read) == 2 and all(torch.equal(x, normalize(i, mean, std)) for x, i in zip(read, images))
    assert read[0].is_contiguous(memory_format=torch.channels_last)
    model = create_model("resnet20").eval()
    graph = analyze(model, 32)
    keep = [max(8, c // 2) for c in graph.channels]
    plain, empty = (
        apply_policy(model, graph, keep),
        apply_policy(model, graph, keep, bn_batches=NormalizedBatches((), mean, std)),
    )
    assert not NormalizedBatches((), mean, std)
    for a, b in zip(plain.state_dict().values(), empty.state_dict().values()):
        assert torch.equal(a, b)  # re-estimating on nothing would have reset the running statistics
    recalibrated = apply_policy(model, graph, keep, bn_batches=batches).state_dict()
    assert any(not torch.equal(a, recalibrated[k]) for k, a in plain.state_dict().items() if "running_mean" in k)

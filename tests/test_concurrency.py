"""Two processes at once on one latency table, and on one run folder: nothing measured is lost, no row doubled."""

import json
import shutil
import subprocess
import sys
import time

import pytest

from toolchain.graph import analyze
from toolchain.latency.profiler import shapes_to_profile
from toolchain.latency.table import LatencyTable
from toolchain.models import create_model
from toolchain.policy import graph_fingerprint

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "toolchain.cli"]


# Two models that take about as long to profile (40 s each on 2 cores), so that the two processes write the table
# over the same stretch of time; resnet20's additions and each model's calibration are entries only one writes
MODELS, STEP = ("resnet20", "plain20"), 16


def test_two_profiles_sharing_a_table_keep_both_models_entries(tmp_path):
    table = tmp_path / "host.json"
    procs = [
        subprocess.Popen(
            [*CLI, "profile", "--model", model, "--table", str(table), "--channel-step", str(STEP)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for model in MODELS
    ]
    for proc in procs:
        assert proc.wait(timeout=600) == 0, proc.stderr.read()[-1000:]
    saved = LatencyTable.load(table)
    assert not table.with_name("host.json.journal").exists()
    for model in MODELS:
        graph = analyze(create_model(model), 32)
        assert set(shapes_to_profile(graph, channel_step=STEP)) <= set(saved.entries), model
        assert graph_fingerprint(graph) in saved.models, model  # each model's whole-model calibration survived


def test_a_second_run_on_a_busy_run_folder_is_refused_and_the_first_finishes_whole(tmp_path, cifar10, resnet20_table):
    out, episodes = tmp_path / "run", 40
    shutil.copy(resnet20_table, tmp_path / "host.json")
    argv = [
        *CLI,
        "compress",
        "--model",
        "resnet20",
        "--data",
        cifar10,
        "--table",
        str(tmp_path / "host.json"),
        "--latency-ratio",
        "0.6",
        "--strategy",
        "random",
        "--episodes",
        str(episodes),
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
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not (out / "search.csv").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, first.stderr.read()[-1000:]  # still searching
    second = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=600)
    assert second.returncode == 2 and "another toolchain process is using" in second.stderr, second.stderr[-500:]
    stdout, stderr = first.communicate(timeout=900)
    assert first.returncode == 0, stderr[-1000:]
    rows = (out / "search.csv").read_text().splitlines()
    assert len(rows) == episodes + 1 and [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, episodes + 1))
    assert json.loads(stdout.strip().splitlines()[-1])["within_budget"] in (True, False)

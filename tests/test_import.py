import json
from pathlib import Path

import numpy as np
import pytest

from toolchain.cli import main
from toolchain.errors import ToolchainError
from toolchain.latency.importer import config_graph, import_logs, load_model_config, read_logs
from toolchain.latency.predictor import LatencyPredictor
from toolchain.latency.runners import Target
from toolchain.latency.table import LatencyTable

REPO = Path(__file__).resolve().parents[1]
LOGS = REPO.parent / "shared" / "datasets" / "pixel1-mobilenet-v1"
CONFIGS = REPO / "latency_tables" / "model_configs"
PIXEL1 = Target("pixel1", "benchmark_model", "2018", delegate="none", fingerprint="pixel1")


def model(config: str, prefix: str):
    return load_model_config(CONFIGS / f"{config}.json")[1], read_logs(sorted(LOGS.glob(f"{prefix}_run*.txt")))


def test_table_fitted_on_two_variants_predicts_the_third():
    table = LatencyTable(PIXEL1)
    import_logs(table, *model("mobilenet_v1_1.0", "mobilenet"))
    import_logs(table, *model("mobilenet_v1_amc_0.5flops", "0.5flops"))
    sigs, logs = model("mobilenet_v1_0.75", "0.75mobilenet")
    measured = np.median([log.inference_avg_us for log in logs]) / 1e3
    predicted = LatencyPredictor(config_graph(sigs), table).predict()
    assert measured == pytest.approx(72.16, abs=0.1)
    assert abs(predicted / measured - 1) < 0.05


def test_imported_entries_are_the_logged_per_op_medians():
    table = LatencyTable(PIXEL1)
    sigs, logs = model("mobilenet_v1_0.75", "0.75mobilenet")
    import_logs(table, sigs, logs)
    stem = table.get(sigs[0])
    assert stem.runs == 3 and stem.median_ms == np.median([log.ops[0].ms_per_run for log in logs])
    assert sigs[0].key() == "CONV_2D 224x224 3->24 k3 s2 SAME RELU6"


def test_config_that_does_not_match_the_log_is_refused():
    sigs, logs = model("mobilenet_v1_0.75", "0.75mobilenet")
    with pytest.raises(ToolchainError, match="node 1 .* is DEPTHWISE_CONV_2D but the model config says CONV_2D"):
        import_logs(LatencyTable(PIXEL1), [sigs[0], sigs[2], sigs[1], *sigs[3:]], logs)
    with pytest.raises(ToolchainError, match="profiles 31 ops but the model config lists 30"):
        import_logs(LatencyTable(PIXEL1), sigs[:-1], logs)


def test_import_cli_and_the_shipped_pixel1_table(tmp_path, capsys):
    table = tmp_path / "pixel1.json"
    argv = [
        "import-logs",
        *map(str, sorted(LOGS.glob("0.5flops_run*.txt"))),
        "--device",
        "pixel1",
        "--runtime-version",
        "2018",
        "--table",
        str(table),
        "--model-config",
        str(CONFIGS / "mobilenet_v1_amc_0.5flops.json"),
        "--json",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["imported"] == 30 and out["logs"] == 3
    shipped = LatencyTable.load(REPO / "latency_tables" / "pixel1-pixel1-benchmark_model-fp32-t1.json")
    assert shipped.target == PIXEL1 and len(shipped.models) == 3
    assert LatencyTable.load(table).entries.items() <= shipped.entries.items()
    assert (
        main(
            [
                "import-logs",
                str(LOGS / "README.md"),
                "--device",
                "pixel1",
                "--table",
                str(table),
                "--model-config",
                str(CONFIGS / "mobilenet_v1_1.0.json"),
            ]
        )
        == 2
    )
    assert "README.md" in capsys.readouterr().err

"""Hostile but realistic inputs, one row each: corrupt and mismatched files, bad settings, unusable paths and
unusual models. Every one must end in exit status 2 with a one-line error that says what to do, no traceback,
and the input files untouched."""

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder
from test_latency import SyntheticRunnerFor

from toolchain.cli import main
from toolchain.files import UMASK, write_atomic
from toolchain.graph import analyze
from toolchain.latency.profiler import profile
from toolchain.latency.runners import Target
from toolchain.latency.table import LatencyTable
from toolchain.models import create_model, default_spec, save_checkpoint
from toolchain.policy import PruningPolicy

TARGET = Target("host", "litert", "2.3.0", fingerprint="test")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good files to damage: a resnet20 table (synthetic timings), a policy, a checkpoint, an image folder."""
    root = tmp_path_factory.mktemp("hostile")
    graph = analyze(create_model("resnet20"), 32)
    table = root / "table.json"
    profile(graph, SyntheticRunnerFor(TARGET), LatencyTable.open(table, TARGET))
    policy = root / "policy.json"
    PruningPolicy.uniform(graph, "resnet20", 0.5).save(policy)
    checkpoint = root / "model.pt"
    save_checkpoint(checkpoint, create_model("resnet20"), default_spec("resnet20"), {"top1_test": 0.1})
    weights = root / "r20.pth"  # a user's state_dict of a 10-class resnet20
    torch.save(create_model("resnet20").state_dict(), weights)
    pickled = root / "whole.pth"
    torch.save(create_model("resnet20"), pickled)
    scripted = root / "scripted.pt"
    torch.jit.script(create_model("resnet20")).save(str(scripted))
    empty_class = make_image_folder(root / "empty_class", per_class=(2, 1))
    (empty_class / "train" / "yak").mkdir()
    data = make_image_folder(root / "data", classes=[f"c{i}" for i in range(10)], per_class=(2, 1), size=(32, 32))
    return {
        "root": root,
        "table": table,
        "policy": policy,
        "checkpoint": checkpoint,
        "weights": weights,
        "pickled": pickled,
        "scripted": scripted,
        "empty_class": empty_class,
        "data": data,
    }


def edited_json(path: Path, out: Path, edit) -> Path:
    blob = json.loads(path.read_text())
    edit(blob)
    out.write_text(json.dumps(blob))
    return out


def edited_checkpoint(path: Path, out: Path, edit) -> Path:
    blob = torch.load(path, weights_only=True)
    edit(blob)
    torch.save(blob, out)
    return out


def table_case(edit):
    return lambda f, tmp: [
        "predict",
        "--model",
        "resnet20",
        "--table",
        str(edited_json(f["table"], tmp / "t.json", edit)),
    ]


def policy_case(edit):
    return lambda f, tmp: [
        "predict",
        "--model",
        "resnet20",
        "--table",
        str(f["table"]),
        "--policy",
        str(edited_json(f["policy"], tmp / "p.json", edit)),
    ]


def checkpoint_case(edit):
    return lambda f, tmp: [
        "eval",
        "--model",
        str(edited_checkpoint(f["checkpoint"], tmp / "m.pt", edit)),
        "--data",
        str(f["data"]),
    ]


def written(tmp: Path, name: str, content: bytes | str) -> Path:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def set_group(field, value):
    def edit(blob):
        blob["groups"][0][field] = value

    return edit


CASES = {
    # latency tables
    "table without target": (table_case(lambda b: b.pop("target")), "at target"),
    "table with an extra target key": (table_case(lambda b: b["target"].update(cpu="x")), "target.cpu"),
    "table with a string target": (table_case(lambda b: b.update(target="host")), "at target"),
    "table with a list of entries": (table_case(lambda b: b.update(entries=[1, 2])), "at entries"),
    "table with a negative entry": (
        table_case(lambda b: next(iter(b["entries"].values())).update(median_ms=-1)),
        "median_ms",
    ),
    "table with a NaN entry": (
        table_case(lambda b: next(iter(b["entries"].values())).update(p90_ms=math.nan)),
        "p90_ms",
    ),
    "table with a key that is no op": (
        table_case(lambda b: b["entries"].update({"CONV_2D nonsense": b["entries"].popitem()[1]})),
        "not an op signature",
    ),
    "table of version 99": (table_case(lambda b: b.update(version=99)), "format version 99"),
    "table given as a folder": (lambda f, tmp: ["predict", "--model", "resnet20", "--table", str(tmp)], "is a folder"),
    # pruning policies
    "policy keeping zero channels": (policy_case(set_group("keep", 0)), "groups.0.keep"),
    "policy with an infinite ratio": (policy_case(set_group("ratio", math.inf)), "groups.0.ratio"),
    "policy with a zero ratio": (policy_case(set_group("ratio", 0)), "groups.0.ratio"),
    "policy with a fractional keep": (policy_case(set_group("keep", 4.5)), "groups.0.keep"),
    "policy keeping more than the group": (policy_case(set_group("keep", 1000)), "more than the group"),
    "policy of version 99": (policy_case(lambda b: b.update(version=99)), "at version"),
    "policy of binary bytes": (
        lambda f, tmp: [
            "predict",
            "--model",
            "resnet20",
            "--table",
            str(f["table"]),
            "--policy",
            str(written(tmp, "p.json", bytes(range(256)))),
        ],
        "is not text",
    ),
    "checkpoint passed as a policy": (
        lambda f, tmp: ["predict", "--model", "resnet20", "--table", str(f["table"]), "--policy", str(f["checkpoint"])],
        "is not text",
    ),
    "policy of another model": (
        lambda f, tmp: ["predict", "--model", "resnet56", "--table", str(f["table"]), "--policy", str(f["policy"])],
        "does not fit this model",
    ),
    # checkpoints
    "checkpoint without spec": (checkpoint_case(lambda b: b.pop("spec")), "at spec"),
    "checkpoint without metrics": (checkpoint_case(lambda b: b.pop("metrics")), "at metrics"),
    "checkpoint with unknown constructor arguments": (
        checkpoint_case(lambda b: b["spec"]["kwargs"].update(depth=7)),
        "cannot be built with",
    ),
    "checkpoint missing a weight": (checkpoint_case(lambda b: b["state_dict"].pop("fc.bias")), "missing fc.bias"),
    "checkpoint given as a folder": (
        lambda f, tmp: ["eval", "--model", str(tmp) + "/", "--data", str(f["data"])],
        "is a folder",
    ),
    # imported logs
    "model config that is a list": (
        lambda f, tmp: [
            "import-logs",
            str(written(tmp, "log.txt", "x")),
            "--device",
            "pixel1",
            "--model-config",
            str(written(tmp, "c.json", "[1, 2]")),
        ],
        "at its top level",
    ),
    "model config given as a folder": (
        lambda f, tmp: [
            "import-logs",
            str(written(tmp, "log.txt", "x")),
            "--device",
            "pixel1",
            "--model-config",
            str(tmp),
        ],
        "is a folder",
    ),
    "log given as a folder": (
        lambda f, tmp: [
            "import-logs",
            str(tmp),
            "--device",
            "pixel1",
            "--model-config",
            str(written(tmp, "c.json", '{"ops": ["RELU 1x1 8->8 k1 s1 VALID NONE"]}')),
        ],
        "is a folder",
    ),
    # settings
    "seed beyond 64 bits": (
        lambda f, tmp: [
            "compress",
            "--model",
            "resnet20",
            "--data",
            "/nowhere",
            "--latency-ratio",
            "0.5",
            "--seed",
            str(2**70),
        ],
        "--seed",
    ),
    "input size of 30000 pixels": (
        lambda f, tmp: ["eval", "--model", "resnet20", "--data", "/nowhere", "--input-size", "30000"],
        "--input-size 30000",
    ),
    "NaN exploration noise": (
        lambda f, tmp: [
            "compress",
            "--model",
            "resnet20",
            "--data",
            "/nowhere",
            "--latency-ratio",
            "0.5",
            "--sigma",
            "nan",
        ],
        "--sigma nan",
    ),
    "no BatchNorm images": (
        lambda f, tmp: (
            ["compress", "--model", "resnet20", "--data", "/nowhere", "--latency-ratio", "0.5"] + ["--bn-images", "0"]
        ),
        "BatchNorm images",
    ),
    "inverted keep-ratio bounds": (
        lambda f, tmp: [
            "compress",
            "--model",
            "resnet20",
            "--data",
            "/nowhere",
            "--latency-ratio",
            "0.5",
            "--lbound",
            "0.8",
            "--rbound",
            "0.3",
        ],
        "0 < lbound <= rbound",
    ),
    "NaN weight decay": (
        lambda f, tmp: [
            "train",
            "--model",
            "resnet20",
            "--data",
            "/nowhere",
            "--out",
            str(tmp / "x.pt"),
            "--weight-decay",
            "nan",
        ],
        "weight decay nan",
    ),
    "plot in an unknown format": (
        lambda f, tmp: ["profile", "--model", "resnet20", "--validate", "--plot", str(tmp / "p.bmp")],
        "--plot",
    ),
    "an empty model name": (lambda f, tmp: ["eval", "--model", "", "--data", str(f["data"])], "--model is empty"),
    "a batch of no images": (
        lambda f, tmp: ["eval", "--model", "resnet20", "--data", str(f["data"]), "--batch-size", "0"],
        "--batch-size 0 must be at least 1",
    ),
    "a vision transformer": (
        lambda f, tmp: [
            "predict",
            "--model",
            "torchvision:vit_b_16",
            "--num-classes",
            "10",
            "--table",
            str(f["table"]),
        ],
        "is a transformer",
    ),
    # users' own models and images
    "a whole pickled model as weights": (
        lambda f, tmp: ["eval", "--model", "resnet20", "--weights", str(f["pickled"]), "--data", str(f["data"])],
        "holds a whole pickled model",
    ),
    "a TorchScript file as weights": (
        lambda f, tmp: ["eval", "--model", "resnet20", "--weights", str(f["scripted"]), "--data", str(f["data"])],
        "is a TorchScript archive",
    ),
    "weights of another architecture": (
        lambda f, tmp: ["eval", "--model", "plain20", "--weights", str(f["weights"]), "--data", str(f["data"])],
        "does not fit plain20",
    ),
    "--num-classes against the weights": (
        lambda f, tmp: [
            "eval",
            "--model",
            "resnet20",
            "--weights",
            str(f["weights"]),
            "--num-classes",
            "7",
            "--data",
            str(f["data"]),
        ],
        "--num-classes 7 disagrees",
    ),
    "weights for a checkpoint": (
        lambda f, tmp: [
            "eval",
            "--model",
            str(f["checkpoint"]),
            "--weights",
            str(f["weights"]),
            "--data",
            str(f["data"]),
        ],
        "drop --weights",
    ),
    "an own module that does not import": (
        lambda f, tmp: ["eval", "--model", "no_such_package.nets:tiny", "--data", str(f["data"])],
        "cannot import no_such_package.nets",
    ),
    "an unknown timm model": (
        lambda f, tmp: ["eval", "--model", "timm:no_such_net", "--data", str(f["data"])],
        "unknown timm model",
    ),
    "an empty class folder": (
        lambda f, tmp: ["eval", "--model", "resnet20", "--num-classes", "4", "--data", str(f["empty_class"])],
        "train/yak has no images",
    ),
    # output paths
    "output under /proc": (
        lambda f, tmp: [
            "prune",
            "--model",
            "resnet20",
            "--policy",
            "uniform:0.5",
            "--no-reconstruct",
            "--out",
            "/proc/toolchain-test/m.pt",
        ],
        "/proc",
    ),
    "output that is a folder": (
        lambda f, tmp: [
            "prune",
            "--model",
            "resnet20",
            "--policy",
            "uniform:0.5",
            "--no-reconstruct",
            "--out",
            str(tmp),
        ],
        "Is a directory",
    ),
    "output folder that is a file": (
        lambda f, tmp: [
            "prune",
            "--model",
            "resnet20",
            "--policy",
            "uniform:0.5",
            "--no-reconstruct",
            "--out",
            str(written(tmp, "file", "x") / "m.pt"),
        ],
        "is a file, not a folder",
    ),
}


def digest(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_is_one_line_exit_2_and_touches_nothing(case, files, tmp_path, capsys):
    argv_of, message = CASES[case]
    argv = argv_of(files, tmp_path)
    before = digest(files["root"]), digest(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert message in err, err
    assert (digest(files["root"]), digest(tmp_path)) == before


@pytest.mark.parametrize(
    "journal", [bytes(range(256)) * 4, b"[1, 2, 3]\n", b'{"op": "RELU 1x1 8->8 k1 s1 VALID NONE"}\n']
)
def test_a_damaged_journal_loses_only_its_damaged_lines(journal, files, tmp_path, capsys):
    table = tmp_path / "t.json"
    table.write_bytes(files["table"].read_bytes())
    good = {"op": "RELU 1x1 9->9 k1 s1 VALID NONE", "median_ms": 0.001, "p10_ms": 0.001, "p90_ms": 0.001, "runs": 3}
    (tmp_path / "t.json.journal").write_bytes(journal + b"\n" + json.dumps(good).encode() + b"\n")
    loaded = LatencyTable.open(table, TARGET)
    assert len(loaded) == len(LatencyTable.load(files["table"])) + 1  # the good line is kept, the damaged ones dropped
    assert main(["predict", "--model", "resnet20", "--table", str(table), "--json"]) == 0


def test_atomic_writes_keep_the_usual_file_mode(tmp_path):
    """A table or report written through a temporary file is readable by others like any file the user writes,
    and a rewrite keeps the mode the file had."""
    fresh, kept = tmp_path / "fresh.json", tmp_path / "kept.json"
    write_atomic(fresh, "{}")
    kept.write_text("{}")
    kept.chmod(0o640)
    write_atomic(kept, "{}\n")
    (plain := tmp_path / "plain.json").write_text("{}")  # as any other program writes a file here
    assert fresh.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o666 & ~UMASK
    assert kept.stat().st_mode & 0o777 == 0o640 and kept.read_text() == "{}\n"

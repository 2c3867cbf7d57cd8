import pytest
import torch

from toolchain.errors import ToolchainError
from toolchain.models import create_model, default_spec, load_checkpoint, save_checkpoint


def test_round_trip_is_exact_and_weights_only(tmp_path):
    spec = default_spec("resnet20")
    model = create_model("resnet20").eval()
    with torch.no_grad():  # make BN statistics non-trivial so they must be saved
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, spec, {"top1_test": 0.5})
    raw = torch.load(path, weights_only=True)  # plain data only: nothing is unpickled
    assert raw["spec"]["arch"] == "resnet20" and raw["spec"]["classes"][0] == "airplane"
    loaded = load_checkpoint(path)
    assert loaded.spec == spec and loaded.metrics == {"top1_test": 0.5}
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(loaded.model(x), model(x))


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(ToolchainError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ToolchainError, match="corrupt"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save(create_model("resnet20").state_dict(), foreign)
    with pytest.raises(ToolchainError, match="not a toolchain checkpoint"):
        load_checkpoint(foreign)


def test_truncated_and_mismatched_checkpoints(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, create_model("resnet20"), default_spec("resnet20"))
    truncated = tmp_path / "t.pt"
    truncated.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ToolchainError, match="corrupt"):
        load_checkpoint(truncated)
    blob = torch.load(path, weights_only=True)
    blob["state_dict"]["fc.weight"] = torch.zeros(3, 64)
    torch.save(blob, path)
    with pytest.raises(ToolchainError, match=r"fc.weight is \(3, 64\) there, \(10, 64\) in resnet20"):
        load_checkpoint(path)

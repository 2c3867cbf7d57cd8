import pytest

from toolchain.data import load_split
from toolchain.evaluate import evaluate
from toolchain.models import list_models, load_model, zoo_checkpoint

COMMITTED = [name for name in list_models() if zoo_checkpoint(name).exists()]


def test_the_main_zoo_model_has_a_trained_checkpoint():
    assert "resnet20" in COMMITTED  # the default of `make demo` and the benchmarks


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_checkpoint_reproduces_its_recorded_accuracy(name, cifar10):
    loaded = load_model(name)
    recorded = loaded.metrics["top1_test"]
    test = load_split(cifar10, "test", loaded.spec.input_size, limit=loaded.metrics.get("test_images"))
    assert loaded.spec.classes == test.classes
    assert evaluate(loaded.model, loaded.spec, test) == pytest.approx(recorded, abs=0.002)

import pytest
import torch

from toolchain.errors import ToolchainError
from toolchain.models import arch_defaults, count_macs, count_params, create_model, list_models, load_model


@pytest.mark.parametrize("name", list_models())
def test_zoo_forward_shape(name):
    defaults = arch_defaults(name)
    size = defaults.input_size
    assert create_model(name).eval()(torch.randn(2, 3, size, size)).shape == (2, defaults.num_classes)
    assert create_model(name, num_classes=7).eval()(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_zoo_contains_the_amc_cifar_models():
    assert {"plain20", "resnet20", "resnet56", "mobilenet_v2_cifar", "vgg11_cifar"} <= set(list_models())


def test_torchvision_adapter_builds_untrained_classifier():
    loaded = load_model("torchvision:mobilenet_v2", num_classes=10, input_size=64)
    assert loaded.spec.input_size == 64 and loaded.spec.num_classes == 10
    assert loaded.model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_an_untrained_network_is_the_same_each_time_it_is_loaded():
    """A run without weights (a latency-only search, a test) resumes with the network it started with."""
    from toolchain.models import ModelSource, load

    def weights(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)  # the caller's random state does not reach the network's initial weights
        loaded = load(ModelSource("torchvision:mobilenet_v2", num_classes=10, input_size=64), init_seed=0)
        return loaded.model.classifier[1].weight

    assert torch.equal(weights(1), weights(2))
    other = load(ModelSource("torchvision:mobilenet_v2", num_classes=10, input_size=64), init_seed=1)
    assert not torch.equal(weights(1), other.model.classifier[1].weight)


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ToolchainError, match="resnet20"):
        load_model("resnet21")
    with pytest.raises(ToolchainError, match="unknown torchvision classifier"):
        load_model("torchvision:not_a_net")


def test_param_and_mac_counts_match_the_architecture():
    # ResNet-20: 3x3 convs 16/32/64 wide, 1x1 projections at the two downsampling blocks, a 64->10 classifier.
    convs = 3 * 16 * 9 + 6 * 16 * 16 * 9 + (16 * 32 * 9 + 5 * 32 * 32 * 9) + (32 * 64 * 9 + 5 * 64 * 64 * 9)
    shortcuts = 16 * 32 + 32 * 64
    bn = 2 * (16 * 7 + 32 * 7 + 64 * 7)
    fc = 64 * 10 + 10
    model = create_model("resnet20")
    assert count_params(model) == convs + shortcuts + bn + fc
    macs = (
        (3 * 16 * 9 + 6 * 16 * 16 * 9) * 32 * 32
        + (16 * 32 * 9 + 5 * 32 * 32 * 9 + 16 * 32) * 16 * 16
        + (32 * 64 * 9 + 5 * 64 * 64 * 9 + 32 * 64) * 8 * 8
        + 64 * 10
    )
    assert count_macs(model, 32) == macs

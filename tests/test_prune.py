import gc
import json
import weakref

import pytest
import torch
from torch import nn

from toolchain.data import load_split, normalize
from toolchain.errors import ToolchainError
from toolchain.evaluate import evaluate
from toolchain.graph import analyze
from toolchain.models import count_macs, create_model, list_models, load_checkpoint, load_model
from toolchain.policy import PruningPolicy, round_channels
from toolchain.prune import apply_policy, collect_features, select_channels

TORCHVISION = [
    "torchvision:mobilenet_v2",
    "torchvision:mobilenet_v3_small",
    "torchvision:resnet18",
    "torchvision:resnet50",
    "torchvision:vgg11_bn",
    "torchvision:googlenet",
]


def load(name):
    if name.startswith("torchvision:"):
        return load_model(name, num_classes=10, input_size=64)
    return load_model(name, pretrained=False)


def randomize_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("name", list_models() + TORCHVISION)
def test_keeping_everything_reproduces_outputs_exactly_and_half_runs(name):
    loaded = load(name)
    size = loaded.spec.input_size
    model = randomize_bn(loaded.model)
    graph = analyze(model, size)
    x = torch.randn(2, 3, size, size)
    assert torch.equal(apply_policy(model, graph, graph.channels)(x), model(x))
    half = apply_policy(model, graph, PruningPolicy.uniform(graph, name, 0.5))
    assert half(x).shape == (2, loaded.spec.num_classes)


def weights_and_macs(signatures):
    """Parameter and MAC counts of conv/FC layers computed from op signatures alone."""
    params = macs = 0
    for s in signatures:
        if s.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            oh = -(-s.h // s.stride) if s.padding == "SAME" else (s.h - s.kernel) // s.stride + 1
            ow = -(-s.w // s.stride) if s.padding == "SAME" else (s.w - s.kernel) // s.stride + 1
            per_out = s.kernel**2 * (1 if s.kind == "DEPTHWISE_CONV_2D" else s.c_in)
            params += s.c_out * per_out
            macs += oh * ow * s.c_out * per_out
        elif s.kind == "FULLY_CONNECTED":
            params += s.c_out * s.c_in + s.c_out
            macs += s.c_out * s.c_in
    return params, macs


@pytest.mark.parametrize(
    "name",
    ["resnet20", "plain20", "mobilenet_v2_cifar", "vgg11_cifar", "torchvision:resnet18", "torchvision:mobilenet_v2"],
)
def test_pruned_shapes_match_an_analytic_count(name):
    loaded = load(name)
    model, size = loaded.model, loaded.spec.input_size
    graph = analyze(model, size)
    gen = torch.Generator().manual_seed(0)
    keep = [round_channels(float(torch.empty(1).uniform_(0.2, 1.0, generator=gen)), g.channels) for g in graph.groups]
    pruned = apply_policy(model, graph, keep)
    params = sum(
        m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
        for m in pruned.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    )
    assert (params, count_macs(pruned, size)) == weights_and_macs(graph.signatures(keep))
    # and the traced graph of the pruned model is the policy's graph
    assert analyze(pruned, size).signatures() == graph.signatures(keep)


class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 24, 1), nn.BatchNorm2d(24), nn.ReLU())
        self.mix = nn.Conv2d(40, 32, 1)
        self.fc = nn.Linear(32, 4)

    def forward(self, x):
        x = self.mix(torch.cat([self.a(x), self.b(x)], 1))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_concat_groups_map_channel_ranges():
    model = randomize_bn(ConcatNet())
    graph = analyze(model, 8)
    assert [g.lead for g in graph.groups] == ["a.0", "b.0", "mix"]
    pruned = apply_policy(model, graph, [8, 8, 16])
    assert pruned.mix.weight.shape == (16, 16, 1, 1) and pruned.fc.weight.shape == (4, 16)
    assert pruned(torch.randn(1, 3, 8, 8)).shape == (1, 4)
    assert analyze(pruned, 8).signatures() == graph.signatures([8, 8, 16])


def test_grouped_convs_are_left_unpruned_with_a_warning():
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.Conv2d(16, 16, 3, groups=4), nn.Conv2d(16, 8, 1), nn.Flatten(), nn.LazyLinear(2)
    )
    model(torch.zeros(1, 3, 8, 8))
    graph = analyze(model, 8)
    assert all("1" not in g.members for g in graph.groups)
    assert any("grouped convolution (groups=4)" in w for w in graph.warnings)


def test_selection_keeps_the_largest_l1_channels():
    model = create_model("plain20").eval()
    graph = analyze(model, 32)
    group = graph.groups[1]  # blocks.0.conv1 -> read by blocks.0.conv2
    reader = model.get_submodule(group.consumers[0])
    with torch.no_grad():
        reader.weight.mul_(0.01)
        reader.weight[:, [3, 7, 11]] *= 1000
    keep = [g.channels for g in graph.groups]
    keep[1] = 3
    assert select_channels(model, graph, keep)[1].tolist() == [3, 7, 11]


@pytest.fixture(scope="module")
def resnet20_with_features(cifar10):
    loaded = load_model("resnet20")
    graph = analyze(loaded.model, 32)
    train = load_split(cifar10, "train", 32, limit=1000)
    features = collect_features(
        loaded.model, graph, (normalize(x, loaded.spec.mean, loaded.spec.std) for x, _ in train.batches(250))
    )
    return loaded, graph, features


def test_reconstruction_lowers_consumer_output_error_on_real_features(resnet20_with_features, cifar10):
    loaded, graph, features = resnet20_with_features
    val = normalize(load_split(cifar10, "val", 32, limit=200).images, loaded.spec.mean, loaded.spec.std)
    keep = list(graph.channels)
    keep[5] = 16  # halve blocks.4.conv1; its consumer blocks.4.conv2 is rebuilt
    consumer = graph.groups[5].consumers[0]

    def consumer_output(model):
        out = {}
        handle = model.get_submodule(consumer).register_forward_hook(lambda m, i, o: out.setdefault("y", o))
        with torch.no_grad():
            model(val)
        handle.remove()
        return out["y"]

    reference = consumer_output(loaded.model)
    plain = (consumer_output(apply_policy(loaded.model, graph, keep)) - reference).pow(2).mean()
    rebuilt = (consumer_output(apply_policy(loaded.model, graph, keep, features)) - reference).pow(2).mean()
    assert rebuilt < 0.7 * plain


def test_reconstruction_raises_one_shot_accuracy(resnet20_with_features, cifar10):
    loaded, graph, features = resnet20_with_features
    val = load_split(cifar10, "val", 32, limit=1000)
    policy = PruningPolicy.uniform(graph, "resnet20", 0.5)
    plain = evaluate(apply_policy(loaded.model, graph, policy), loaded.spec, val)
    rebuilt = evaluate(apply_policy(loaded.model, graph, policy, features), loaded.spec, val)
    assert rebuilt > plain + 0.1, (plain, rebuilt)


def test_reconstruction_fits_when_sampled_rows_determine_it_and_keeps_the_selection_when_not():
    from toolchain.prune import reconstruct

    torch.manual_seed(0)
    layer = nn.Linear(12, 3)
    x = torch.randn(40, 12)
    x[:, 5] = x[:, 0] + 0.01 * torch.randn(40)  # input 5 is nearly input 0: a refit can recover what dropping it lost

    def refit(rows):
        design = torch.cat([x[:rows], torch.ones(rows, 1)], 1)
        return reconstruct(layer.weight.detach(), layer.bias.detach(), design.T @ design, {5})

    weight, bias = refit(40)  # 40 rows, 12 unknowns: a real fit
    error = (x @ weight.T + bias - layer(x)).pow(2).mean()
    plain = (x[:, [i for i in range(12) if i != 5]] @ layer.weight[:, [i for i in range(12) if i != 5]].T).detach()
    assert error < 0.01 * (plain + layer.bias.detach() - layer(x)).pow(2).mean()
    weight, bias = refit(8)  # 8 rows for 12 unknowns would interpolate them: the selected weights stay as they are
    assert torch.equal(weight[:, 5], torch.zeros(3)) and torch.equal(weight[:, :5], layer.weight[:, :5].detach())
    assert torch.equal(bias, layer.bias.detach())


def test_prune_cli_writes_a_loadable_smaller_checkpoint(tmp_path, capsys, cifar10):
    from toolchain.cli import main

    out = tmp_path / "p.pt"
    assert (
        main(
            [
                "prune",
                "--model",
                "resnet20",
                "--policy",
                "uniform:0.5",
                "--data",
                cifar10,
                "--calibration-images",
                "200",
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["keep"] == [8] * 4 + [16] * 4 + [32] * 4 and result["params"] < result["unpruned_params"] / 3
    raw = torch.load(out, weights_only=True)
    assert raw["spec"]["policy"]["groups"][0]["keep"] == 8
    loaded = load_checkpoint(out)
    assert loaded.model.fc.weight.shape == (10, 32)
    assert main(["eval", "--model", str(out), "--data", cifar10, "--limit", "100", "--json"]) == 0
    assert (
        main(
            [
                "prune",
                "--model",
                str(out),
                "--policy",
                "uniform:0.5",
                "--no-reconstruct",
                "--out",
                str(tmp_path / "x.pt"),
            ]
        )
        == 2
    )
    assert "already pruned" in capsys.readouterr().err


def test_policy_errors():
    graph = analyze(create_model("resnet20"), 32)
    bad = PruningPolicy.uniform(graph, "resnet20", 0.5)
    with pytest.raises(ToolchainError, match="keeps 99 channels"):
        PruningPolicy(
            bad.arch, bad.input_size, bad.fingerprint, bad.leads, bad.channels, (99,) + bad.keep[1:], bad.ratios
        ).validate(graph)
    assert round_channels(0.2, 16) == 8 and round_channels(0.01, 64) == 8 and round_channels(0.5, 6) == 6


def test_residual_adds_tie_channels_and_depthwise_follows_its_producer():
    resnet = analyze(create_model("resnet20"), 32)
    stage1 = resnet.groups[0]
    assert stage1.lead == "stem.0" and stage1.channels == 16
    assert {"blocks.0.conv2", "blocks.1.conv2", "blocks.2.conv2"} <= set(stage1.members)  # summed by the adds
    assert {"blocks.0.conv1", "blocks.1.conv1", "blocks.2.conv1", "blocks.3.conv1", "blocks.3.shortcut.0"} == set(
        stage1.consumers
    )
    assert len(resnet.groups) == 12  # 3 residual stages + 9 inner block convs; the classifier output is never a group
    mbv2 = analyze(create_model("mobilenet_v2_cifar"), 32)
    expand = next(g for g in mbv2.groups if g.lead == "features.2.conv.0")
    assert "features.2.conv.3" in expand.members  # the depthwise conv after the expansion
    assert expand.consumers == ("features.2.conv.6",)  # only the projection reads them: depthwise is not a consumer
    assert all(g.lead != "fc" for g in mbv2.groups)


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(4, 6, 3, 1, 1),
        nn.Conv2d(4, 6, 3, 2, 1, bias=False),
        nn.Conv2d(4, 6, (3, 5), 1, (1, 2)),
        nn.Conv2d(4, 6, 3, 1, 2, dilation=2),
        nn.Conv2d(4, 6, 4, 1, padding="same"),
        nn.Conv2d(4, 6, 1, 2),
    ],
    ids=["3x3", "strided", "non-square", "dilated", "same-even", "1x1-strided"],
)
def test_sampled_patches_reproduce_the_conv_at_every_sampled_position(conv):
    from toolchain.models.imagenet import Conv2dSame
    from toolchain.prune import _patches

    for layer in (conv, Conv2dSame(4, 6, 3, 2)) if conv.stride == (2, 2) and conv.bias is None else (conv,):
        x = torch.randn(3, 4, 9, 9)
        rows = _patches(layer, x, 7, torch.Generator().manual_seed(1))
        out = layer(x)  # (3, 6, OH, OW)
        g = torch.Generator().manual_seed(1)
        ys = torch.randint(0, out.shape[2], (3, 7), generator=g)
        xs = torch.randint(0, out.shape[3], (3, 7), generator=g)
        expected = out.permute(0, 2, 3, 1)[torch.arange(3)[:, None], ys, xs].reshape(21, 6)
        bias = layer.bias if layer.bias is not None else torch.zeros(6)  # rows end with the constant 1 either way
        w = torch.cat([layer.weight.reshape(6, -1), bias[:, None]], 1)
        torch.testing.assert_close(rows @ w.T, expected, atol=1e-5, rtol=1e-5)


def test_a_pruned_model_is_freed_as_soon_as_it_is_dropped():
    """The surgery's dependency graph is cyclic and holds its tracing pass's activations: left so, every pruned
    model of a search stayed in memory until the cycle collector happened to run."""
    model = create_model("resnet20").eval()
    graph = analyze(model, 32)
    gc.disable()
    try:
        pruned = apply_policy(model, graph, [max(8, c // 2) for c in graph.channels])
        ref = weakref.ref(pruned.get_submodule(graph.groups[0].lead))  # what the graph's nodes point at
        del pruned
        assert ref() is None
    finally:
        gc.enable()

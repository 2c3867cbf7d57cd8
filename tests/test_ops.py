"""The op registry, parametrised over its entries: every kind builds a single-op model that reads back to its
signature, runs in LiteRT and ONNX Runtime with the output shape its signature implies, and traced models list
the ops the converter really emits."""

import numpy as np
import pytest
import torch
from test_latency import Tiny, TinyConcat
from torch import nn

from toolchain import ops
from toolchain.export import to_tflite
from toolchain.graph import analyze
from toolchain.latency.onnx_ops import single_op_onnx
from toolchain.latency.signature import OpSignature
from toolchain.latency.tflite import read_signatures, single_op_model
from toolchain.models import create_model

# One signature per registered kind: adding a kind to the registry means adding its example here.
SAMPLES = {
    "CONV_2D": OpSignature("CONV_2D", 9, 9, 8, 16, 3, 2, "VALID", "RELU"),
    "DEPTHWISE_CONV_2D": OpSignature("DEPTHWISE_CONV_2D", 8, 8, 16, 16, 3, 1, "SAME", "RELU6"),
    "FULLY_CONNECTED": OpSignature("FULLY_CONNECTED", 1, 1, 32, 10),
    "PAD": OpSignature("PAD", 8, 8, 16, 16, padding="P1"),
    "PADV2": OpSignature("PADV2", 8, 8, 16, 16, padding="P2"),
    "ADD": OpSignature("ADD", 8, 8, 16, 16, act="RELU"),
    "MUL": OpSignature("MUL", 8, 8, 16, 16),
    "MUL_BY_CHANNEL": OpSignature("MUL_BY_CHANNEL", 8, 8, 16, 16),
    "MUL_BY_SCALAR": OpSignature("MUL_BY_SCALAR", 1, 1, 16, 16),
    "RELU": OpSignature("RELU", 8, 8, 16, 16),
    "RELU6": OpSignature("RELU6", 8, 8, 16, 16),
    "HARD_SWISH": OpSignature("HARD_SWISH", 8, 8, 16, 16),
    "LOGISTIC": OpSignature("LOGISTIC", 8, 8, 16, 16),
    "SOFTMAX": OpSignature("SOFTMAX", 1, 1, 10, 10),
    "MEAN": OpSignature("MEAN", 4, 4, 24, 24),
    "MAX_POOL_2D": OpSignature("MAX_POOL_2D", 8, 8, 16, 16, 2, 2),
    "AVERAGE_POOL_2D": OpSignature("AVERAGE_POOL_2D", 8, 8, 16, 16, 3, 1, "SAME"),
    "RESHAPE": OpSignature("RESHAPE", 2, 2, 8, 8),
    "CONCATENATION": OpSignature("CONCATENATION", 4, 4, 24, 24),
    "SQUEEZE": OpSignature("SQUEEZE", 1, 1, 10, 10),
}


def test_every_registered_kind_has_an_example():
    assert set(SAMPLES) == {k.name for k in ops.kinds()}


def output_elements(sig: OpSignature) -> int:
    """What the op's output holds, from the signature alone."""
    if sig.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D"):
        p = (sig.kernel - 1) // 2 if sig.padding == "SAME" else 0
        side = (sig.h + 2 * p - sig.kernel) // sig.stride + 1
        return side * side * sig.c_out
    if sig.kind in ("PAD", "PADV2"):
        side = sig.h + 2 * int(sig.padding[1:])
        return side * side * sig.c_out
    if sig.kind in ("MEAN", "FULLY_CONNECTED", "SQUEEZE"):
        return sig.c_out
    return sig.h * sig.w * sig.c_out


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_single_op_tflite_reads_back_and_runs_with_its_output_shape(name):
    from ai_edge_litert.interpreter import Interpreter

    sig = SAMPLES[name]
    model = single_op_model(sig)
    assert read_signatures(model) == [sig]
    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    for d in interpreter.get_input_details():
        interpreter.set_tensor(d["index"], np.random.default_rng(0).standard_normal(d["shape"]).astype(np.float32))
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert out.size == output_elements(sig) and not np.isnan(out).any()  # PADV2 pads with -inf


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_single_op_onnx_runs_with_its_output_shape(name):
    import onnxruntime as ort

    sig = SAMPLES[name]
    session = ort.InferenceSession(single_op_onnx(sig), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.random.default_rng(0).standard_normal(i.shape).astype(np.float32) for i in session.get_inputs()}
    out = session.run(None, feeds)[0]
    assert out.size == output_elements(sig) and not np.isnan(out).any()  # PADV2 pads with -inf


class TinyMobile(nn.Module):
    """MobileNetV3 and EfficientNet constructs: hard-swish, a squeeze-excitation gate with a hard sigmoid, SiLU,
    a sigmoid gate, a strided depthwise conv whose padding needs a PAD, and a residual add."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), nn.BatchNorm2d(16), nn.SiLU())
        self.se_reduce, self.se_expand = nn.Conv2d(16, 8, 1), nn.Conv2d(8, 16, 1)
        self.pw = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.gate = nn.Conv2d(16, 16, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.dw(self.stem(x))
        s = x.mean((2, 3), keepdim=True)
        s = nn.functional.hardsigmoid(self.se_expand(torch.relu(self.se_reduce(s))))
        x = x * s
        x = x + self.pw(x) * torch.sigmoid(self.gate(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_traced_ops_match_the_converter_op_for_op():
    for model, size in ((Tiny(), 16), (TinyConcat(), 16), (TinyMobile(), 16), (create_model("resnet20"), 32)):
        graph = analyze(model, size)
        assert graph.signatures() == read_signatures(to_tflite(model, size))
    kinds = {s.kind for s in analyze(TinyMobile(), 16).signatures()}
    assert {"HARD_SWISH", "LOGISTIC", "MUL", "MUL_BY_CHANNEL", "MUL_BY_SCALAR", "PAD"} <= kinds


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0"])
def test_torchvision_mobile_nets_list_the_ops_the_converter_emits(name):
    import torchvision

    model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    assert analyze(model, 64).signatures() == read_signatures(to_tflite(model, 64))


def test_onnx_op_list_keeps_conv_padding_where_tflite_needs_a_pad_op():
    graph = analyze(create_model("resnet20"), 32)
    tflite, onnx = graph.signatures(), graph.signatures(model_format="onnx")
    pads = [s for s in tflite if s.kind == "PAD"]
    assert pads and not any(s.kind == "PAD" for s in onnx)
    assert len(onnx) == len(tflite) - len(pads)
    strided = [s for s in onnx if s.kind == "CONV_2D" and s.stride == 2 and s.kernel == 3]
    assert strided and all(s.padding == "P1" for s in strided)

"""Single-op ONNX models for the ONNX Runtime runner: the same `OpSignature`s as the `.tflite` builder, written
with onnx.helper in NCHW layout (what `torch.onnx.export` produces). Each op kind's nodes are its entry in the
op registry (`toolchain.ops`).

ONNX Runtime fuses Conv + activation and rewrites convolutions into its blocked NCHWc layout with reorders at
the graph's edges, so a single op in isolation runs slower than inside a whole model; the per-architecture
calibration line of the predictor absorbs most of that, and `profile --validate` reports what remains.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import ops
from .signature import OpSignature

OPSET = 20


def single_op_onnx(sig: OpSignature, seed: int = 0) -> bytes:
    return packed_onnx([sig], seed)


def packed_onnx(sigs: list[OpSignature], seed: int = 0) -> bytes:
    """Several single-op graphs side by side in one model, each with its own input and output (as the `.tflite`
    `packed_model`): ONNX Runtime's sequential executor runs them one after another."""
    b = OnnxBuilder()
    rng = np.random.default_rng(seed)
    return b.finish([ops.kind(sig.kind).onnx(b, sig, rng) for sig in sigs])


class OnnxBuilder:
    """Accumulates graph inputs, initializers and nodes; names are generated in order."""

    def __init__(self):
        self.inputs: list[onnx.ValueInfoProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []

    def _name(self, prefix: str) -> str:
        return f"{prefix}{len(self.inputs) + len(self.inits) + len(self.nodes)}"

    def input(self, shape: list[int]) -> str:
        name = self._name("x")
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        return name

    def const(self, value: np.ndarray) -> str:
        name = self._name("c")
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op_type: str, inputs: list[str], **attributes) -> str:
        out = self._name("y")
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attributes))
        return out

    def activation(self, x: str, act: str) -> str:
        if act == "RELU":
            return self.node("Relu", [x])
        if act == "RELU6":
            return self.node("Clip", [x, self.const(np.array(0, np.float32)), self.const(np.array(6, np.float32))])
        if act == "HARD_SWISH":
            return self.node("HardSwish", [x])
        if act == "LOGISTIC":
            return self.node("Sigmoid", [x])
        return x

    def finish(self, outputs: list[str]) -> bytes:
        graph = helper.make_graph(
            self.nodes,
            "single_op",
            self.inputs,
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, None) for output in outputs],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="toolchain")
        return model.SerializeToString()

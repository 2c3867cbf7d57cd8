"""Single-op ONNX models for the ONNX Runtime runner: the same `OpSignature`s as the `.tflite` builder, written
with onnx.helper in NCHW layout (what `torch.onnx.export` produces).

ONNX Runtime fuses Conv + activation and rewrites convolutions into its blocked NCHWc layout with reorders at
the graph's edges, so a single op in isolation runs slower than inside a whole model; the per-architecture
calibration line of the predictor absorbs most of that, and `profile --validate` reports what remains.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .signature import OpSignature

OPSET = 20


def single_op_onnx(sig: OpSignature, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, sig.c_in, sig.h, sig.w])]
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    kind, y = sig.kind, "y"
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        depthwise = kind == "DEPTHWISE_CONV_2D"
        w_shape = (sig.c_out, 1 if depthwise else sig.c_in, sig.kernel, sig.kernel)
        pad = (sig.kernel - 1) // 2 if sig.padding == "SAME" else 0
        nodes.append(helper.make_node("Conv", ["x", const("w", (rng.standard_normal(w_shape) * 0.1).astype(np.float32)),
                                               const("b", np.zeros(sig.c_out, np.float32))], ["conv"],
                                      kernel_shape=[sig.kernel] * 2, strides=[sig.stride] * 2, pads=[pad] * 4,
                                      group=sig.c_out if depthwise else 1))
        y = _activation(nodes, "conv", sig.act, const)
    elif kind == "FULLY_CONNECTED":
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, sig.c_in])]
        nodes.append(helper.make_node("Gemm", ["x", const("w", (rng.standard_normal((sig.c_out, sig.c_in)) * 0.1).astype(np.float32)),
                                               const("b", np.zeros(sig.c_out, np.float32))], ["fc"], transB=1))
        y = _activation(nodes, "fc", sig.act, const)
    elif kind == "ADD":
        inputs.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, sig.c_in, sig.h, sig.w]))
        nodes.append(helper.make_node("Add", ["x", "x2"], ["sum"]))
        y = _activation(nodes, "sum", sig.act, const)
    elif kind == "MEAN":
        nodes.append(helper.make_node("ReduceMean", ["x", const("axes", np.array([2, 3], np.int64))], [y], keepdims=0))
    elif kind in ("PAD", "PADV2"):
        p = sig.kernel
        nodes.append(helper.make_node("Pad", ["x", const("pads", np.array([0, 0, p, p, 0, 0, p, p], np.int64))], [y]))
    elif kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        pad = (sig.kernel - 1) // 2 if sig.padding == "SAME" else 0
        op = "MaxPool" if kind == "MAX_POOL_2D" else "AveragePool"
        nodes.append(helper.make_node(op, ["x"], [y], kernel_shape=[sig.kernel] * 2, strides=[sig.stride] * 2, pads=[pad] * 4))
    elif kind == "RESHAPE":
        nodes.append(helper.make_node("Flatten", ["x"], [y]))
    elif kind == "CONCATENATION":
        half = sig.c_in // 2
        inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, c, sig.h, sig.w])
                  for n, c in (("x", half), ("x2", sig.c_in - half))]
        nodes.append(helper.make_node("Concat", ["x", "x2"], [y], axis=1))
    elif kind in ("RELU", "RELU6"):
        y = _activation(nodes, "x", kind, const)
    else:
        raise ValueError(f"no single-op ONNX builder for {kind}")
    graph = helper.make_graph(nodes, "single_op", inputs, [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="toolchain")
    return model.SerializeToString()


def _activation(nodes, x: str, act: str, const) -> str:
    if act == "RELU":
        nodes.append(helper.make_node("Relu", [x], ["y"]))
    elif act == "RELU6":
        nodes.append(helper.make_node("Clip", [x, const("lo", np.array(0, np.float32)), const("hi", np.array(6, np.float32))], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", [x], ["y"]))
    return "y"

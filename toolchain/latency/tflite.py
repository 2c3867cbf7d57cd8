"""Single-op `.tflite` models written directly with the flatbuffer schema that ai-edge-litert ships, and the
reverse: reading the op signatures out of any `.tflite` file.

Converting a one-layer PyTorch module with litert-torch takes ~0.8 s of pipeline overhead, which would dominate
profiling; writing the same one-op flatbuffer takes ~0.3 ms (BENCHMARKS.md, "Latency tables"). `tests/test_latency.py` checks,
op for op, that what this module writes matches what the converter emits (op code, options, tensor shapes).
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from .signature import OpSignature

_BUILTIN = {name: code for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
_BUILTIN_NAME = {code: name for name, code in _BUILTIN.items()}
_ACT = {"NONE": schema.ActivationFunctionType.NONE, "RELU": schema.ActivationFunctionType.RELU,
        "RELU6": schema.ActivationFunctionType.RELU6}
_ACT_NAME = {v: k for k, v in _ACT.items()}
_PAD = {"SAME": schema.Padding.SAME, "VALID": schema.Padding.VALID}
_PAD_NAME = {v: k for k, v in _PAD.items()}


def single_op_model(sig: OpSignature, seed: int = 0) -> bytes:
    """A one-op fp32 model computing `sig` on a (1, H, W, C_in) NHWC input, with random constant weights."""
    rng = np.random.default_rng(seed)
    b = _ModelBuilder()
    x = b.tensor([1, sig.h, sig.w, sig.c_in])
    kind = sig.kind
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        oh, ow = _conv_out(sig)
        depthwise = kind == "DEPTHWISE_CONV_2D"
        w_shape = [1, sig.kernel, sig.kernel, sig.c_out] if depthwise else [sig.c_out, sig.kernel, sig.kernel, sig.c_in]
        w = b.constant(rng.standard_normal(w_shape, dtype=np.float32) * 0.1)
        bias = b.constant(rng.standard_normal(sig.c_out, dtype=np.float32) * 0.1)
        y = b.tensor([1, oh, ow, sig.c_out])
        if depthwise:
            opts = schema.DepthwiseConv2DOptionsT()
            opts.depthMultiplier = 1
            opts_type = schema.BuiltinOptions.DepthwiseConv2DOptions
        else:
            opts = schema.Conv2DOptionsT()
            opts_type = schema.BuiltinOptions.Conv2DOptions
        opts.padding, opts.strideW, opts.strideH = _PAD[sig.padding], sig.stride, sig.stride
        opts.dilationWFactor = opts.dilationHFactor = 1
        opts.fusedActivationFunction = _ACT[sig.act]
        b.op(kind, [x, w, bias], [y], opts_type, opts)
    elif kind == "FULLY_CONNECTED":
        x = b.replace_input([1, sig.c_in])
        w = b.constant(rng.standard_normal([sig.c_out, sig.c_in], dtype=np.float32) * 0.1)
        bias = b.constant(rng.standard_normal(sig.c_out, dtype=np.float32) * 0.1)
        y = b.tensor([1, sig.c_out])
        opts = schema.FullyConnectedOptionsT()
        opts.fusedActivationFunction, opts.keepNumDims = _ACT[sig.act], True
        b.op(kind, [x, w, bias], [y], schema.BuiltinOptions.FullyConnectedOptions, opts)
    elif kind == "ADD":
        x2 = b.tensor([1, sig.h, sig.w, sig.c_in], is_input=True)
        y = b.tensor([1, sig.h, sig.w, sig.c_in])
        opts = schema.AddOptionsT()
        opts.fusedActivationFunction = _ACT[sig.act]
        b.op(kind, [x, x2], [y], schema.BuiltinOptions.AddOptions, opts)
    elif kind == "MEAN":
        axes = b.constant(np.array([1, 2], dtype=np.int32))
        y = b.tensor([1, sig.c_in])
        opts = schema.ReducerOptionsT()
        opts.keepDims = False
        b.op(kind, [x, axes], [y], schema.BuiltinOptions.ReducerOptions, opts)
    elif kind in ("PAD", "PADV2"):
        p = sig.kernel
        pads = b.constant(np.array([[0, 0], [p, p], [p, p], [0, 0]], dtype=np.int32))
        y = b.tensor([1, sig.h + 2 * p, sig.w + 2 * p, sig.c_in])
        if kind == "PAD":
            b.op(kind, [x, pads], [y], schema.BuiltinOptions.PadOptions, schema.PadOptionsT())
        else:
            value = b.constant(np.array([-np.inf], dtype=np.float32).reshape(()))
            b.op(kind, [x, pads, value], [y], schema.BuiltinOptions.PadV2Options, schema.PadV2OptionsT())
    elif kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        oh, ow = _conv_out(sig)
        y = b.tensor([1, oh, ow, sig.c_in])
        opts = schema.Pool2DOptionsT()
        opts.padding, opts.strideW, opts.strideH = _PAD[sig.padding], sig.stride, sig.stride
        opts.filterWidth = opts.filterHeight = sig.kernel
        opts.fusedActivationFunction = _ACT[sig.act]
        b.op(kind, [x], [y], schema.BuiltinOptions.Pool2DOptions, opts)
    elif kind == "RESHAPE":
        shape = b.constant(np.array([1, sig.h * sig.w * sig.c_in], dtype=np.int32))
        y = b.tensor([1, sig.h * sig.w * sig.c_in])
        b.op(kind, [x, shape], [y], schema.BuiltinOptions.ReshapeOptions, schema.ReshapeOptionsT())
    elif kind in ("RELU", "RELU6"):
        y = b.tensor([1, sig.h, sig.w, sig.c_in])
        b.op(kind, [x], [y], 0, None)
    elif kind == "CONCATENATION":  # two inputs along channels; the signature's c_in is their sum
        half = sig.c_in // 2
        x = b.replace_input([1, sig.h, sig.w, half])
        x2 = b.tensor([1, sig.h, sig.w, sig.c_in - half], is_input=True)
        y = b.tensor([1, sig.h, sig.w, sig.c_in])
        opts = schema.ConcatenationOptionsT()
        opts.axis, opts.fusedActivationFunction = 3, _ACT[sig.act]
        b.op(kind, [x, x2], [y], schema.BuiltinOptions.ConcatenationOptions, opts)
    else:
        raise ValueError(f"no single-op builder for {kind}")
    return b.finish(outputs=[y])


def _conv_out(sig: OpSignature) -> tuple[int, int]:
    if sig.padding == "SAME":
        return -(-sig.h // sig.stride), -(-sig.w // sig.stride)
    return (sig.h - sig.kernel) // sig.stride + 1, (sig.w - sig.kernel) // sig.stride + 1


class _ModelBuilder:
    """Accumulates tensors, constant buffers and operators of a single-subgraph fp32 model."""

    def __init__(self):
        self.model = schema.ModelT()
        self.model.version = 3
        self.model.description = "toolchain single-op latency model"
        self.model.buffers = [schema.BufferT()]  # buffer 0 is the empty sentinel
        self.model.operatorCodes = []
        self.subgraph = schema.SubGraphT()
        self.subgraph.tensors, self.subgraph.operators, self.subgraph.inputs = [], [], []
        self.model.subgraphs = [self.subgraph]

    def tensor(self, shape: list[int], buffer: int = 0, dtype=schema.TensorType.FLOAT32, is_input: bool = False) -> int:
        t = schema.TensorT()
        t.shape, t.type, t.buffer, t.name = list(shape), dtype, buffer, f"t{len(self.subgraph.tensors)}"
        self.subgraph.tensors.append(t)
        index = len(self.subgraph.tensors) - 1
        if is_input or not self.subgraph.inputs:
            self.subgraph.inputs.append(index)
        return index

    def replace_input(self, shape: list[int]) -> int:
        self.subgraph.tensors[self.subgraph.inputs[0]].shape = list(shape)
        return self.subgraph.inputs[0]

    def constant(self, value: np.ndarray) -> int:
        buf = schema.BufferT()
        buf.data = np.frombuffer(value.tobytes(), dtype=np.uint8)
        self.model.buffers.append(buf)
        dtype = schema.TensorType.INT32 if value.dtype == np.int32 else schema.TensorType.FLOAT32
        return self.tensor(list(value.shape), len(self.model.buffers) - 1, dtype)

    def op(self, kind: str, inputs: list[int], outputs: list[int], options_type, options) -> None:
        code = schema.OperatorCodeT()
        code.builtinCode = _BUILTIN[kind]
        code.deprecatedBuiltinCode = min(_BUILTIN[kind], 127)
        code.version = 1
        self.model.operatorCodes.append(code)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = len(self.model.operatorCodes) - 1, inputs, outputs
        op.builtinOptionsType, op.builtinOptions = options_type, options
        self.subgraph.operators.append(op)

    def finish(self, outputs: list[int]) -> bytes:
        self.subgraph.outputs = outputs
        builder = flatbuffers.Builder(1024)
        builder.Finish(self.model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def read_signatures(model: bytes) -> list[OpSignature]:
    """The op signatures of every op in a `.tflite` file's main subgraph, in execution order."""
    m = schema.ModelT.InitFromPackedBuf(model, 0)
    sg = m.subgraphs[0]
    out = []
    for op in sg.operators:
        code = m.operatorCodes[op.opcodeIndex]
        kind = _BUILTIN_NAME[max(code.builtinCode, code.deprecatedBuiltinCode)]
        x = [int(d) for d in sg.tensors[op.inputs[0]].shape]
        y = [int(d) for d in sg.tensors[op.outputs[0]].shape]
        h, w = (x[1], x[2]) if len(x) == 4 else (1, 1)
        o = op.builtinOptions
        act = _ACT_NAME.get(getattr(o, "fusedActivationFunction", 0), "NONE")
        padding = _PAD_NAME.get(getattr(o, "padding", schema.Padding.VALID), "VALID")
        kernel, stride = 1, int(getattr(o, "strideW", 1) or 1)
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            kernel = int(sg.tensors[op.inputs[1]].shape[1])
        elif kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            kernel = int(o.filterWidth)
        elif kind in ("PAD", "PADV2"):
            kernel = (y[1] - x[1]) // 2
        c_in = sum(int(sg.tensors[i].shape[-1]) for i in op.inputs) if kind == "CONCATENATION" else x[-1]
        if kind in ("RELU", "RELU6"):
            act = "NONE"
        out.append(OpSignature(kind, h, w, c_in, y[-1], kernel, stride, padding, act))
    return out

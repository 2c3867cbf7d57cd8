"""Single-op `.tflite` models written directly with the flatbuffer schema that ai-edge-litert ships, and the
reverse: reading the op signatures out of any `.tflite` file. What each op kind looks like (its inputs, options,
how to read it back) is its entry in the op registry (`toolchain.ops`); this module holds the model plumbing.

Converting a one-layer PyTorch module with litert-torch takes ~0.8 s of pipeline overhead, which would dominate
profiling; writing the same one-op flatbuffer takes ~0.3 ms (BENCHMARKS.md, "Latency tables"). `tests/test_latency.py`
checks, op for op, that what this module writes matches what the converter emits (op code, options, shapes).
"""

from __future__ import annotations

from collections.abc import Sequence

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from .. import ops
from ..ops.common import ACT_NAME, PADDING_NAME
from .signature import OpSignature

_BUILTIN = {name: code for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
_BUILTIN_NAME = {code: name for name, code in _BUILTIN.items()}


PRECISIONS = ("fp32", "fp16", "int8")
ACTIVATION_SCALE = 0.05  # int8 activations: the speed of an int8 kernel does not depend on its scales


def single_op_model(sig: OpSignature, seed: int = 0, precision: str = "fp32") -> bytes:
    """A one-op model computing `sig` on NHWC inputs, with random constant weights, at `precision`: fp32; fp16
    (float16 weights dequantized to fp32, as ai-edge-quantizer's fp16 recipe stores them); or int8 (int8 weights
    per output channel and int8 activations, int32 biases: what its static int8 recipe emits)."""
    return packed_model([sig], seed, precision)


def packed_model(sigs: Sequence[OpSignature], seed: int = 0, precision: str = "fp32") -> bytes:
    """Several single-op graphs side by side in one model: each op has its own inputs and its output is a model
    output, so none waits for another and the runtime executes them in the order given. A phone's benchmark_model
    times them all in one run, and its op profile gives each op's time."""
    b = ModelBuilder(precision)
    rng = np.random.default_rng(seed)
    return b.finish(outputs=[ops.kind(sig.kind).tflite(b, sig, rng) for sig in sigs])


class ModelBuilder:
    """Accumulates the tensors, constant buffers and operators of a single-subgraph model. Op kinds build through
    it: `input` and `activation` tensors, `weight`, `bias` and other constants, then `op`; the builder's precision
    decides each tensor's type and quantization, so one op kind builds every precision."""

    def __init__(self, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}")
        self.precision = precision
        self.model = schema.ModelT()
        self.model.version = 3
        self.model.description = "toolchain single-op latency model"
        self.model.buffers = [schema.BufferT()]  # buffer 0 is the empty sentinel
        self.model.operatorCodes = []
        self.subgraph = schema.SubGraphT()
        self.subgraph.tensors, self.subgraph.operators, self.subgraph.inputs = [], [], []
        self.model.subgraphs = [self.subgraph]
        self._weight_scales: np.ndarray | None = None  # of the last int8 weight: its bias is quantized with them

    @property
    def int8(self) -> bool:
        return self.precision == "int8"

    def _tensor(
        self,
        shape: list[int],
        buffer: int = 0,
        dtype=schema.TensorType.FLOAT32,
        scale: np.ndarray | None = None,
        zero_point: np.ndarray | None = None,
        axis: int = 0,
    ) -> int:
        t = schema.TensorT()
        t.shape, t.type, t.buffer, t.name = list(shape), dtype, buffer, f"t{len(self.subgraph.tensors)}"
        if scale is not None:
            q = schema.QuantizationParametersT()
            q.scale = [float(x) for x in np.atleast_1d(scale)]
            q.zeroPoint = [
                int(x) for x in np.atleast_1d(zero_point if zero_point is not None else np.zeros_like(scale))
            ]
            q.quantizedDimension = axis
            t.quantization = q
        self.subgraph.tensors.append(t)
        return len(self.subgraph.tensors) - 1

    def _buffer(self, value: np.ndarray) -> int:
        buf = schema.BufferT()
        buf.data = np.frombuffer(value.tobytes(), dtype=np.uint8)
        self.model.buffers.append(buf)
        return len(self.model.buffers) - 1

    def _int8_activation(self, shape: list[int], unit_interval: bool) -> int:
        # sigmoid and softmax outputs have the fixed [0, 1) range the int8 kernels require
        scale, zero = (1 / 256, -128) if unit_interval else (ACTIVATION_SCALE, 0)
        return self._tensor(shape, dtype=schema.TensorType.INT8, scale=np.array([scale]), zero_point=np.array([zero]))

    def input(self, shape: list[int]) -> int:
        index = self._int8_activation(shape, False) if self.int8 else self._tensor(shape)
        self.subgraph.inputs.append(index)
        return index

    def activation(self, shape: list[int], unit_interval: bool = False) -> int:
        """An op's output; `unit_interval` for outputs in [0, 1] (sigmoid, softmax)."""
        return self._int8_activation(shape, unit_interval) if self.int8 else self._tensor(shape)

    def constant(self, value: np.ndarray) -> int:
        """A constant operand that is not a weight (axes, paddings, shapes): int32 or float32 as given."""
        dtype = schema.TensorType.INT32 if value.dtype == np.int32 else schema.TensorType.FLOAT32
        return self._tensor(list(value.shape), self._buffer(value), dtype)

    def weight(self, value: np.ndarray, channel_axis: int) -> int:
        """A weight tensor; `channel_axis` is its output-channel axis, where int8 weights have their scales."""
        value = value.astype(np.float32)
        if self.int8:
            other = tuple(a for a in range(value.ndim) if a != channel_axis)
            scales = np.maximum(np.abs(value).max(axis=other), 1e-8) / 127
            shape = [1] * value.ndim
            shape[channel_axis] = -1
            q = np.clip(np.round(value / scales.reshape(shape)), -127, 127).astype(np.int8)
            self._weight_scales = scales.astype(np.float32)
            return self._tensor(
                list(value.shape),
                self._buffer(q),
                schema.TensorType.INT8,
                scales,
                np.zeros(len(scales), dtype=np.int64),
                channel_axis,
            )
        if self.precision == "fp16":
            half = self._tensor(list(value.shape), self._buffer(value.astype(np.float16)), schema.TensorType.FLOAT16)
            full = self._tensor(list(value.shape))
            self.op("DEQUANTIZE", [half], [full], 0, None)
            return full
        return self.constant(value)

    def bias(self, value: np.ndarray) -> int:
        """An int32 bias quantized with input scale x weight scale per channel (int8), else float32."""
        if self.int8:
            scales = ACTIVATION_SCALE * self._weight_scales
            q = np.round(value / scales).astype(np.int32)
            return self._tensor(
                [len(q)], self._buffer(q), schema.TensorType.INT32, scales, np.zeros(len(q), dtype=np.int64)
            )
        return self.constant(value.astype(np.float32))

    def scalar(self, value: float) -> int:
        if self.int8:
            q = np.array(int(round(value / ACTIVATION_SCALE)), dtype=np.int8)
            return self._tensor([], self._buffer(q), schema.TensorType.INT8, np.array([ACTIVATION_SCALE]))
        return self.constant(np.array(value, dtype=np.float32))

    def pad_value(self, value: float) -> int:
        """PADV2's constant: -inf for max pooling in float; the lowest int8 value, in the input's scale, in int8."""
        if self.int8:
            return self._tensor(
                [], self._buffer(np.array(-128, dtype=np.int8)), schema.TensorType.INT8, np.array([ACTIVATION_SCALE])
            )
        return self.constant(np.array([value], dtype=np.float32).reshape(()))

    def op(self, builtin: str, inputs: list[int], outputs: list[int], options_type, options) -> None:
        code = schema.OperatorCodeT()
        code.builtinCode = _BUILTIN[builtin]
        code.deprecatedBuiltinCode = min(_BUILTIN[builtin], 127)
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
    """The op signatures of every op in a `.tflite` file's main subgraph, in execution order. An op the registry
    does not know is listed by its builtin name, with the shapes of its first input and output."""
    m = schema.ModelT.InitFromPackedBuf(model, 0)
    sg = m.subgraphs[0]
    out = []
    for operator in sg.operators:
        code = m.operatorCodes[operator.opcodeIndex]
        builtin = _BUILTIN_NAME[max(code.builtinCode, code.deprecatedBuiltinCode)]
        inputs = [sg.tensors[i] for i in operator.inputs if i >= 0]
        shapes = [[int(d) for d in t.shape] for t in inputs]
        const = [_is_constant(m, t) for t in inputs]
        op = ops.TFLiteOp(
            builtin,
            shapes,
            [[int(d) for d in sg.tensors[i].shape] for i in operator.outputs],
            operator.builtinOptions,
            const,
        )
        if builtin == "DEQUANTIZE" and const[0]:
            continue  # fp16 weights turned float at load time: not an op of the model's compute
        kind = ops.for_builtin(builtin, op)
        o = op.options
        x = op.x
        fields = {
            "kind": kind.name if kind else builtin,
            "h": x[1] if len(x) == 4 else 1,
            "w": x[2] if len(x) == 4 else 1,
            "c_in": x[-1] if x else 0,
            "c_out": op.y[-1] if op.y else 0,
            "kernel": 1,
            "stride": int(getattr(o, "strideW", 1) or 1),
            "padding": PADDING_NAME.get(getattr(o, "padding", schema.Padding.VALID), "VALID"),
            "act": ACT_NAME.get(getattr(o, "fusedActivationFunction", 0), "NONE"),
        }
        if kind:
            fields.update(kind.read(op))
        out.append(OpSignature(**{k: int(v) if k not in ("kind", "padding", "act") else v for k, v in fields.items()}))
    return out


def _is_constant(model, tensor) -> bool:
    """A tensor with data, in the flatbuffer or (for large weights the quantizer moves out) after it."""
    if tensor.buffer <= 0:
        return False
    buffer = model.buffers[tensor.buffer]
    return buffer.data is not None or buffer.offset > 1

"""Single-op `.tflite` models written directly with the flatbuffer schema that ai-edge-litert ships, and the
reverse: reading the op signatures out of any `.tflite` file. What each op kind looks like (its inputs, options,
how to read it back) is its entry in the op registry (`toolchain.ops`); this module holds the model plumbing.

Converting a one-layer PyTorch module with litert-torch takes ~0.8 s of pipeline overhead, which would dominate
profiling; writing the same one-op flatbuffer takes ~0.3 ms (BENCHMARKS.md, "Latency tables"). `tests/test_latency.py`
checks, op for op, that what this module writes matches what the converter emits (op code, options, shapes).
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from .. import ops
from ..ops.common import ACT_NAME, PADDING_NAME
from .signature import OpSignature

_BUILTIN = {name: code for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
_BUILTIN_NAME = {code: name for name, code in _BUILTIN.items()}


def single_op_model(sig: OpSignature, seed: int = 0) -> bytes:
    """A one-op fp32 model computing `sig` on NHWC inputs, with random constant weights."""
    b = ModelBuilder()
    y = ops.kind(sig.kind).tflite(b, sig, np.random.default_rng(seed))
    return b.finish(outputs=[y])


class ModelBuilder:
    """Accumulates the tensors, constant buffers and operators of a single-subgraph fp32 model. Op kinds build
    through it: `input` and `activation` tensors, `weight`, `bias` and other constants, then `op`."""

    def __init__(self):
        self.model = schema.ModelT()
        self.model.version = 3
        self.model.description = "toolchain single-op latency model"
        self.model.buffers = [schema.BufferT()]  # buffer 0 is the empty sentinel
        self.model.operatorCodes = []
        self.subgraph = schema.SubGraphT()
        self.subgraph.tensors, self.subgraph.operators, self.subgraph.inputs = [], [], []
        self.model.subgraphs = [self.subgraph]

    def _tensor(self, shape: list[int], buffer: int = 0, dtype=schema.TensorType.FLOAT32) -> int:
        t = schema.TensorT()
        t.shape, t.type, t.buffer, t.name = list(shape), dtype, buffer, f"t{len(self.subgraph.tensors)}"
        self.subgraph.tensors.append(t)
        return len(self.subgraph.tensors) - 1

    def input(self, shape: list[int]) -> int:
        index = self._tensor(shape)
        self.subgraph.inputs.append(index)
        return index

    def activation(self, shape: list[int]) -> int:
        return self._tensor(shape)

    def constant(self, value: np.ndarray) -> int:
        buf = schema.BufferT()
        buf.data = np.frombuffer(value.tobytes(), dtype=np.uint8)
        self.model.buffers.append(buf)
        dtype = schema.TensorType.INT32 if value.dtype == np.int32 else schema.TensorType.FLOAT32
        return self._tensor(list(value.shape), len(self.model.buffers) - 1, dtype)

    def weight(self, value: np.ndarray, channel_axis: int) -> int:
        """A weight tensor; `channel_axis` is its output-channel axis (where per-channel scales would go)."""
        return self.constant(value.astype(np.float32))

    def bias(self, value: np.ndarray) -> int:
        return self.constant(value.astype(np.float32))

    def scalar(self, value: float) -> int:
        return self.constant(np.array(value, dtype=np.float32))

    def pad_value(self, value: float) -> int:
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

"""`OpSignature`: the key of a latency-table entry, one op as the runtime executes it."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

_KEY = re.compile(
    r"^(?P<kind>[A-Z0-9_]+) (?P<h>\d+)x(?P<w>\d+) (?P<c_in>\d+)->(?P<c_out>\d+) k(?P<kernel>\d+) "
    r"s(?P<stride>\d+) (?P<padding>SAME|VALID|P\d+) (?P<act>[A-Z0-9_]+)$"
)


@dataclass(frozen=True, order=True)
class OpSignature:
    """One op: kind (an entry of the op registry, `toolchain.ops`), input H x W, input/output channels, kernel,
    stride, padding and fused activation.

    Padding is TFLite's SAME or VALID, or `P<n>`: n pixels on every side, explicitly (a PAD op's width, or an
    ONNX conv's own padding). Depthwise convs have c_in == c_out (one filter per channel), so a separate groups
    field would be redundant.
    """

    kind: str
    h: int
    w: int
    c_in: int
    c_out: int
    kernel: int = 1
    stride: int = 1
    padding: str = "VALID"
    act: str = "NONE"

    def __post_init__(self):
        # A 1x1 window never pads, so TensorFlow's SAME and VALID are the same op there: one key for both, so that
        # tables of TensorFlow graphs (SAME throughout) price PyTorch's 1x1 convs (VALID).
        if self.kernel == 1 and self.padding in ("SAME", "P0"):
            object.__setattr__(self, "padding", "VALID")

    def key(self) -> str:
        """The readable, diff-friendly string that keys the JSON table, e.g. 'CONV_2D 32x32 16->16 k3 s1 SAME RELU'."""
        channels = f"{self.c_in}->{self.c_out}"
        return f"{self.kind} {self.h}x{self.w} {channels} k{self.kernel} s{self.stride} {self.padding} {self.act}"

    @classmethod
    def from_key(cls, key: str) -> OpSignature:
        m = _KEY.match(key)
        if not m:
            raise ValueError(f"not an op signature: {key!r}")
        d = m.groupdict()
        ints = {k: int(d[k]) for k in ("h", "w", "c_in", "c_out", "kernel", "stride")}
        return cls(d["kind"], padding=d["padding"], act=d["act"], **ints)

    @property
    def family(self) -> OpSignature:
        """The signature with channels zeroed: all entries that differ only in channel counts share a family."""
        return replace(self, c_in=0, c_out=0)

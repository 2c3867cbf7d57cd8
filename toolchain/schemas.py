"""One schema per file the tool reads back, checked where the file comes in (pydantic).

Latency tables and their journals, pruning policies, checkpoints, model configs of imported logs, search states
and run configs all come from disk, where a hand edit, another version, a kill or a full disk may have left
anything. `parse` turns a failed check into one line naming the file, the field and the fix; numbers are range
checked (channels >= 1, ratios in (0, 1], milliseconds >= 0 and finite).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ToolchainError

Milliseconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveMilliseconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetRecord(_Record):
    device: str
    runtime: str
    runtime_version: str
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    threads: Count = 1
    delegate: str = "xnnpack"
    fingerprint: str = ""
    machine: dict[str, str] = {}


class TimingRecord(_Record):
    median_ms: Milliseconds
    p10_ms: Milliseconds
    p90_ms: Milliseconds
    runs: Count
    temperatures_c: dict[str, float] | None = None
    load: dict[str, float] | None = None


class CalibrationRecord(_Record):
    ops_sum_ms: list[PositiveMilliseconds] = Field(min_length=1)
    measured_ms: list[PositiveMilliseconds] = Field(min_length=1)

    @model_validator(mode="after")
    def _paired(self):
        if len(self.ops_sum_ms) != len(self.measured_ms):
            raise ValueError("ops_sum_ms and measured_ms must pair up, one of each per measured model")
        return self


class TableFile(_Record):
    format: Literal["toolchain-latency-table"]
    version: Literal[1, 2]
    target: TargetRecord
    unit: Literal["ms"] = "ms"
    models: dict[str, CalibrationRecord] = {}
    entries: dict[str, TimingRecord]


class JournalOp(TimingRecord):
    op: str


class JournalModel(CalibrationRecord):
    model: str


class PolicyModel(_Record):
    arch: str
    input_size: Count
    fingerprint: str


class PolicyGroup(_Record):
    index: Annotated[int, Field(ge=0)]
    lead: str
    channels: Count
    keep: Count
    ratio: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _kept_within_width(self):
        if self.keep > self.channels:
            raise ValueError(f"keep {self.keep} is more than the group's {self.channels} channels")
        return self


class PolicyFile(_Record):
    format: Literal["toolchain-pruning-policy"]
    version: Literal[1]
    model: PolicyModel
    groups: list[PolicyGroup] = Field(min_length=1)


class SpecRecord(_Record):
    arch: str = Field(min_length=1)
    kwargs: dict[str, Any]
    input_size: Annotated[int, Field(ge=8, le=2048)]
    mean: tuple[float, float, float]
    std: tuple[PositiveMilliseconds, PositiveMilliseconds, PositiveMilliseconds]
    classes: list[str] = Field(min_length=1)
    policy: dict[str, Any] | None = None


class CheckpointFile(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    format: Literal["toolchain-checkpoint"]
    version: Literal[1]
    spec: SpecRecord
    metrics: dict[str, Any]
    state_dict: dict[str, Any]


class ModelConfigFile(_Record):
    name: str | None = None
    ops: list[str] = Field(min_length=1)


class SearchState(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    strategy_name: str
    strategy: dict[str, Any]
    episode: Annotated[int, Field(ge=0)]
    best: dict[str, Any] | None


S = TypeVar("S", bound=BaseModel)


def parse(schema: type[S], data: Any, source: str, fix: str) -> S:
    """`data` checked against `schema`, or a one-line `ToolchainError` naming `source`, its first bad field and
    `fix`."""
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "its top level"
        raise ToolchainError(f"{source} is malformed at {where} ({first['msg']}): {fix}") from None

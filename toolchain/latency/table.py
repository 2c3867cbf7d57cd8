"""`LatencyTable`: measured op latencies of one target, stored as a diff-friendly JSON file.

On disk the table is JSON with one entry per line, keyed by `OpSignature.key()`. While profiling, every new entry
is appended to a journal file beside the table (`<table>.journal`, one JSON line each) before anything else
happens, and the table itself is only ever replaced atomically (write a temp file, rename). A killed profiler
therefore loses nothing: the next open folds the journal back in, and a torn last journal line is dropped.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import ToolchainError
from ..files import locked, write_atomic
from ..schemas import JournalModel, JournalOp, TableFile, parse
from .runners import Target, Timing
from .signature import OpSignature

FORMAT = "toolchain-latency-table"
FORMAT_VERSION = 2
READS_VERSIONS = (1, 2)  # version 1 wrote a PAD's width in the kernel slot (k<n> ... VALID) instead of P<n>
TABLES = Path("latency_tables")


def file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def default_table_path(target: Target) -> Path:
    """latency_tables/<device>-<fingerprint>-<runtime>-<precision>-t<threads>.json"""
    return TABLES / file_safe(
        f"{target.device}-{target.fingerprint}-{target.runtime}-{target.precision}-t{target.threads}.json"
    )


@dataclass(frozen=True)
class ModelCalibration:
    """Whole-model variants of one architecture measured end to end next to the sum of their table entries.

    Single-op runs miss what happens between ops (cache reuse, per-invoke overhead), so the predictor maps the
    per-op sum through the straight line fitted to these points: `measured = scale * ops_sum + offset`.
    """

    ops_sum_ms: tuple[float, ...]
    measured_ms: tuple[float, ...]

    def line(self) -> tuple[float, float]:
        x, y = np.array(self.ops_sum_ms), np.array(self.measured_ms)
        if len(x) < 2 or np.ptp(x) < 1e-9:
            return float(y.sum() / x.sum()), 0.0
        scale, offset = np.polyfit(x, y, 1)
        return float(scale), float(offset)


class LatencyTable:
    def __init__(self, target: Target, path: Path | None = None):
        self.target = target
        self.path = path
        self.entries: dict[OpSignature, Timing] = {}
        self.models: dict[str, ModelCalibration] = {}
        self._changed = False  # measurements not yet saved

    def __contains__(self, sig: OpSignature) -> bool:
        return sig in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, sig: OpSignature) -> Timing | None:
        return self.entries.get(sig)

    def pooled_calibration(self) -> ModelCalibration | None:
        """Every model's calibration points together: the target's typical whole-model vs op-sum relation."""
        if not self.models:
            return None
        points = [(x, y) for m in self.models.values() for x, y in zip(m.ops_sum_ms, m.measured_ms)]
        return ModelCalibration(tuple(x for x, _ in points), tuple(y for _, y in points))

    # --- persistence -----------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, target: Target | None) -> LatencyTable:
        """Load `path` (creating an empty table if it does not exist), refusing a table of another target; with
        `target` None, the existing table of whatever target it names (for reading without the device)."""
        path = Path(path)
        table = cls.load(path) if path.exists() or target is None else cls(target, path)
        if target is not None and table.target != target:
            raise ToolchainError(
                f"latency table {path} was measured on another target ({target.differences(table.target)}): its "
                "timings do not hold here; profile this target into its own table (the default file name has its "
                "fingerprint), or pass --table with another file"
            )
        table._changed = table._replay_journal() > 0  # a killed run's measurements: saved with the next save
        return table

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        path = Path(path)
        source = f"latency table {path}"
        if path.is_dir():
            raise ToolchainError(f"{source} is a folder: pass a table's .json file, e.g. one under latency_tables/")
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ToolchainError(f"{source} does not exist: build it with `toolchain profile`") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ToolchainError(
                f"cannot read {source} ({getattr(e, 'strerror', None) or e}): pass a JSON file written by "
                "`toolchain profile`"
            ) from None
        try:
            blob = json.loads(text)
        except json.JSONDecodeError as e:
            raise ToolchainError(
                f"{source} is corrupt at line {e.lineno} ({e.msg}): each entry is one line, so fix or delete that "
                "line and rerun `toolchain profile` to re-measure it"
            ) from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise ToolchainError(f"{path} is not a toolchain latency table: pass a file written by `toolchain profile`")
        if blob.get("version") not in READS_VERSIONS:
            raise ToolchainError(
                f"{source} has format version {blob.get('version')!r}, this toolchain reads "
                f"{', '.join(map(str, READS_VERSIONS))}: upgrade toolchain, or profile again into a new file"
            )
        fix = "fix or delete that entry and rerun `toolchain profile` to re-measure it"
        record = parse(TableFile, blob, source, fix)
        table = cls(Target.from_dict(record.target.model_dump()), path)
        for key, timing in record.entries.items():
            table.entries[_signature(key, source, fix)] = Timing.from_record(timing.model_dump())
        for key, m in record.models.items():
            table.models[key] = ModelCalibration(tuple(m.ops_sum_ms), tuple(m.measured_ms))
        return table

    @property
    def journal_path(self) -> Path:
        assert self.path is not None
        return self.path.with_name(self.path.name + ".journal")

    def add(self, sig: OpSignature, timing: Timing) -> None:
        """Record a measurement; with a path, it is journaled to disk before this returns."""
        self.entries[sig] = timing
        self._journal({"op": sig.key(), **timing.as_record()})

    def add_model(self, key: str, calibration: ModelCalibration) -> None:
        self.models[key] = calibration
        self._journal({"model": key, **asdict(calibration)})

    def _journal(self, record: dict) -> None:
        self._changed = True
        if self.path is None:
            return
        with locked(self.path), open(self.journal_path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _replay_journal(self) -> int:
        """Fold the journal's measurements in; returns how many. A line that does not parse (torn by a kill
        mid-write, or damaged) is skipped: that one entry is measured again."""
        if self.path is None or not self.journal_path.is_file():
            return 0
        replayed = 0
        for line in self.journal_path.read_text(errors="replace").splitlines():
            try:
                r = json.loads(line)
                if isinstance(r, dict) and "op" in r:
                    entry = JournalOp.model_validate(r)
                    self.entries[_signature(entry.op)] = Timing.from_record(entry.model_dump(exclude={"op"}))
                else:
                    model = JournalModel.model_validate(r)
                    self.models[model.model] = ModelCalibration(tuple(model.ops_sum_ms), tuple(model.measured_ms))
                replayed += 1
            except (ValueError, ToolchainError):  # pydantic's ValidationError is a ValueError
                continue
        return replayed

    def save(self) -> None:
        """Merge this table into the file on disk and write it atomically, then drop the journal it now holds.

        Other processes may share the file (two models profiled at once, two compress runs on one target): under
        the table's lock, what they saved or journaled since this table was read is merged in first, so nothing
        anyone measured is lost. A table with nothing new is not written at all (a read-only disk is fine then)."""
        if self.path is None or not self._changed:
            return
        with locked(self.path):
            if self.path.exists():
                disk = LatencyTable.load(self.path)
                disk._replay_journal()
                if disk.target == self.target:
                    self.entries = {**disk.entries, **self.entries}
                    self.models = {**disk.models, **self.models}
            write_atomic(self.path, self._json())
            self.journal_path.unlink(missing_ok=True)
        self._changed = False

    def _json(self) -> str:
        """One entry per line, sorted: a table diffs and merges well under version control."""
        models = ",".join(f"\n  {json.dumps(k)}: {json.dumps(asdict(v))}" for k, v in sorted(self.models.items()))
        entries = ",".join(
            f"\n  {json.dumps(s.key())}: {json.dumps(t.as_record())}" for s, t in sorted(self.entries.items())
        )
        lines = [
            "{",
            f'"format": "{FORMAT}",',
            f'"version": {FORMAT_VERSION},',
            f'"target": {json.dumps(self.target.as_dict())},',
            '"unit": "ms",',
            '"models": {' + models + "\n},",
            '"entries": {' + entries + "\n}",
            "}",
        ]
        return "\n".join(lines) + "\n"


def _signature(key: str, source: str = "", fix: str = "") -> OpSignature:
    """A table key as an `OpSignature`, upgrading version 1's pad ops (width in the kernel slot, padding VALID)."""
    try:
        sig = OpSignature.from_key(key)
    except ValueError:
        raise ToolchainError(f"{source} has an entry {key[:80]!r} that is not an op signature: {fix}") from None
    if sig.kind in ("PAD", "PADV2") and sig.padding == "VALID":
        return replace(sig, kernel=1, padding=f"P{sig.kernel}")
    return sig

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
from ..files import atomic_path
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
                f"latency table {path} was measured on {table.target.describe()}, not on this target "
                f"({target.describe()}): pass --table with another file to keep both"
            )
        table._replay_journal()
        return table

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        path = Path(path)
        try:
            text = path.read_text()
            blob = json.loads(text)
        except FileNotFoundError:
            raise ToolchainError(f"latency table {path} does not exist: build it with `toolchain profile`") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ToolchainError(
                f"cannot read latency table {path} ({getattr(e, 'strerror', None) or e}): pass a JSON file "
                "written by `toolchain profile`"
            ) from None
        except json.JSONDecodeError as e:
            raise ToolchainError(
                f"latency table {path} is corrupt at line {e.lineno} ({e.msg}): each entry is one line, "
                "so fix or delete that line and rerun `toolchain profile` to re-measure it"
            ) from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise ToolchainError(f"{path} is not a toolchain latency table: pass a file written by `toolchain profile`")
        if blob.get("version") not in READS_VERSIONS:
            raise ToolchainError(
                f"latency table {path} has format version {blob.get('version')}, this toolchain reads "
                f"{', '.join(map(str, READS_VERSIONS))}: upgrade toolchain"
            )
        table = cls(Target(**blob["target"]), path)
        try:
            for key, e in blob["entries"].items():
                table.entries[_signature(key)] = Timing.from_record(e)
            for key, m in blob.get("models", {}).items():
                table.models[key] = ModelCalibration(tuple(m["ops_sum_ms"]), tuple(m["measured_ms"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ToolchainError(
                f"latency table {path} has a malformed entry ({e}): fix or delete it and rerun `toolchain profile`"
            ) from None
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
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal_path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _replay_journal(self) -> None:
        if self.path is None or not self.journal_path.exists():
            return
        for line in self.journal_path.read_text().splitlines():
            try:
                r = json.loads(line)
                if "op" in r:
                    self.entries[_signature(r["op"])] = Timing.from_record(r)
                else:
                    self.models[r["model"]] = ModelCalibration(tuple(r["ops_sum_ms"]), tuple(r["measured_ms"]))
            except (ValueError, KeyError):
                continue  # a line torn by a kill mid-write: that one entry is measured again

    def save(self) -> None:
        """Write the whole table atomically, then drop the journal it now contains."""
        if self.path is None:
            return
        lines = [
            "{",
            f'"format": "{FORMAT}",',
            f'"version": {FORMAT_VERSION},',
            f'"target": {json.dumps(self.target.as_dict())},',
            '"unit": "ms",',
            '"models": {'
            + ",".join(f"\n  {json.dumps(k)}: {json.dumps(asdict(v))}" for k, v in sorted(self.models.items()))
            + "\n},",
            '"entries": {'
            + ",".join(
                f"\n  {json.dumps(s.key())}: {json.dumps(t.as_record())}" for s, t in sorted(self.entries.items())
            )
            + "\n}",
            "}",
        ]
        with atomic_path(self.path) as tmp:
            tmp.write_text("\n".join(lines) + "\n")
        self.journal_path.unlink(missing_ok=True)


def _signature(key: str) -> OpSignature:
    """A table key as an `OpSignature`, upgrading version 1's pad ops (width in the kernel slot, padding VALID)."""
    sig = OpSignature.from_key(key)
    if sig.kind in ("PAD", "PADV2") and sig.padding == "VALID":
        return replace(sig, kernel=1, padding=f"P{sig.kernel}")
    return sig

"""Atomic file writes (a reader, or a process killed mid-write, never sees a half-written file), and the check
that a resumed run has the settings it was started with."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ToolchainError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename, on failure it goes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_resumable(
    what: Path, saved: dict[str, Any], now: dict[str, Any], start_over: str, may_change: tuple[str, ...] = ()
) -> None:
    """Refuse to continue `what` with settings other than those it was started with: the result would mix two runs."""
    changed = [f"{k} {saved[k]} -> {v}" for k, v in now.items() if k in saved and k not in may_change and saved[k] != v]
    if changed:
        raise ToolchainError(
            f"{what} was started with other settings ({', '.join(changed)}): rerun with those to "
            f"continue it, or {start_over}"
        )

"""Files that survive kills, full disks and neighbours: atomic writes (a reader, or a process killed mid-write,
never sees a half-written file, and a failed write leaves the previous version whole), locks for files and folders
that several processes share, and the check that a resumed run has the settings it was started with."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ToolchainError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename, on failure it goes."""
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ToolchainError(f"cannot write {path}: {blocking} is a file, not a folder; choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp's file is private (0600); the result gets the mode the file had, or a new file's usual mode
        tmp.chmod(path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~UMASK)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: done once, at import, before any thread writes
    os.umask(mask)
    return mask


UMASK = _read_umask()


def write_atomic(path: Path, content: str | bytes) -> None:
    with atomic_path(path) as tmp:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content)


@contextmanager
def locked(path: Path, wait: bool = True) -> Iterator[None]:
    """Hold `path`'s lock while the block runs (a `.<name>.lock` file beside it; for a folder, inside it), so that
    processes sharing a latency table or a run folder take turns instead of losing each other's work. With `wait`
    False, a lock held by another process is a one-line error instead of a wait."""
    lock = path / ".lock" if path.is_dir() else path.with_name(f".{path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise ToolchainError(
                f"another toolchain process is using {path}: wait for it to finish, or pass another --out"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def check_resumable(
    what: Path,
    saved: dict[str, Any],
    now: dict[str, Any],
    start_over: str,
    may_change: tuple[str, ...] = (),
    restore: str = "",
) -> None:
    """Refuse to continue `what` with settings other than those it was started with: the result would mix two runs.
    A setting the saved run lacks came in after it started, so what the run did in its place is not known: a change
    too. `restore` names a flag that brings the saved settings back at once, where there is one."""
    changed = [
        f"{k} {saved[k] if k in saved else '(not recorded)'} -> {v}"
        for k, v in now.items()
        if k not in may_change and (k not in saved or saved[k] != v)
    ]
    if changed:
        raise ToolchainError(
            f"{what} was started with other settings ({', '.join(changed)}): rerun with those{restore} to "
            f"continue it, or {start_over}"
        )

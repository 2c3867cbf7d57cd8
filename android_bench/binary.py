"""The benchmark_model binary for a phone's ABI, downloaded once when the user gives none, and verified.

`benchmark_model.toml` beside this file pins, per Android ABI, a version, where to download it and its sha256. A
download streams into a temporary file beside its place in the cache, is checked (sha256, then the ELF machine
against the ABI) and only then renamed into place, so the cache never holds a partial or unchecked file:

    CACHE/benchmark_model/<version>/<abi>/benchmark_model

A file already there is checked the same way before each use. The caller chooses CACHE (toolchain passes its own
cache folder) and may name a mirror, which replaces the manifest's base_url, and a manifest of its own.

Unknown checksums: Google publishes no sha256 for its benchmark_model builds, so an entry may say `sha256 = ""`.
Such an entry is never downloaded. The binary runs on the user's phone under their trusted ADB key, and a file that
no one has checked could be anything the server or a mirror serves. Trusting the first download and recording its
hash would make an unchecked file look verified, and would keep a bad first download forever. Refusing costs one
step instead, and the error says which: pin the checksum of a copy you have checked, or download the file yourself
and pass it (or save it at its cache path). A file saved at the cache path of an unpinned entry is then the user's
own choice and is used as given (`LocalBinary.pinned` is False), exactly like a binary passed by path.

HTTP uses the standard library only (urllib) with a timeout on every request. A mirror may use any scheme urllib
reads, plain http and file:// included, because trust rests on the pinned checksum, not on the transport.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import struct
import tempfile
import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .adb import DeviceError

MANIFEST = Path(__file__).with_name("benchmark_model.toml")
ELF_MACHINE_ABI = {183: "arm64-v8a", 40: "armeabi-v7a", 62: "x86_64", 3: "x86"}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Release:
    """A manifest entry: the benchmark_model build pinned for one ABI, with its download URL."""

    abi: str
    version: str
    url: str
    sha256: str  # lowercase hex; "" when no checksum is pinned


@dataclass(frozen=True)
class LocalBinary:
    """A benchmark_model file on this computer and what is known about it."""

    path: Path
    version: str | None = None  # the manifest's version; None for a build the user gave
    pinned: bool = False  # its sha256 matched the checksum the manifest pins


def elf_abi(header: bytes) -> str | None:
    """The Android ABI an ELF file is built for (from e_machine), None if it is not an ELF file."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    machine = struct.unpack("<H", header[18:20])[0]
    return ELF_MACHINE_ABI.get(machine, f"ELF machine {machine}")


def load_manifest(path: Path = MANIFEST, mirror: str | None = None) -> dict[str, Release]:
    """The manifest's releases by ABI; `mirror` replaces its base_url."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise DeviceError(f"cannot read the benchmark_model manifest {path}: {error}") from None
    base = (mirror or data.get("base_url", "")).rstrip("/")
    if not base:
        raise DeviceError(f"the benchmark_model manifest {path} lacks base_url: see {MANIFEST}")
    releases = {}
    for abi, entry in data.get("abi", {}).items():
        try:
            release = Release(abi, entry["version"], f"{base}/{entry['path'].lstrip('/')}", entry["sha256"].lower())
        except KeyError as error:
            raise DeviceError(f"the benchmark_model manifest {path} lacks {error} for {abi}: see {MANIFEST}") from None
        if release.sha256 and not re.fullmatch(r"[0-9a-f]{64}", release.sha256):
            raise DeviceError(
                f"the benchmark_model manifest {path} gives {abi} the sha256 '{entry['sha256']}': write "
                f'64 hex digits, or "" when it is not known'
            )
        releases[abi] = release
    return releases


def release_for(abis: Sequence[str], releases: Mapping[str, Release]) -> Release:
    """The release for the first of the phone's ABIs (primary first) that the manifest pins."""
    release = next((releases[abi] for abi in abis if abi in releases), None)
    if release is None:
        raise DeviceError(
            f"no benchmark_model download for a phone running {', '.join(abis)} (the manifest has "
            f"{', '.join(releases) or 'none'}): build //tflite/tools/benchmark:benchmark_model for "
            f"{abis[0]} with bazel and pass --benchmark-binary PATH"
        )
    return release


def cached_path(cache_dir: Path, release: Release) -> Path:
    return Path(cache_dir) / "benchmark_model" / release.version / release.abi / "benchmark_model"


def fetch_binary(
    abis: Sequence[str],
    cache_dir: Path,
    *,
    manifest: Path = MANIFEST,
    mirror: str | None = None,
    timeout_s: float = 60.0,
) -> LocalBinary:
    """The pinned benchmark_model for a phone running `abis`: the checked copy in `cache_dir`, downloaded and
    checked on first use."""
    release = release_for(abis, load_manifest(manifest, mirror))
    path = cached_path(cache_dir, release)
    if path.is_file():
        return _checked_cache(path, release)
    if not release.sha256:
        raise DeviceError(
            f"benchmark_model {release.version} for {release.abi} has no pinned sha256 in {manifest} "
            f"(Google publishes none), so it is not downloaded unchecked: pin the sha256 of a copy of "
            f"{release.url} you have checked there, or save that copy as {path} (or pass "
            f"--benchmark-binary PATH)"
        )
    _download(release, path, timeout_s)
    return LocalBinary(path, release.version, pinned=True)


def _checked_cache(path: Path, release: Release) -> LocalBinary:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if release.sha256 and digest != release.sha256:
        raise DeviceError(
            f"{path} has sha256 {digest}, not the {release.sha256} pinned for benchmark_model "
            f"{release.version} ({release.abi}): delete it and it is downloaded again"
        )
    problem = _elf_problem(data[:20], release.abi)
    if problem:
        raise DeviceError(f"{path} {problem}: delete it, or save the {release.abi} build of {release.url} there")
    return LocalBinary(path, release.version, pinned=bool(release.sha256))


def _elf_problem(header: bytes, abi: str) -> str | None:
    found = elf_abi(header)
    if found is None:
        return "is not an executable (no ELF header)"
    return None if found == abi else f"is built for {found}, not {abi}"


def _download(release: Release, path: Path, timeout_s: float) -> None:
    """Stream the release into a temporary file beside `path`, check it, and rename it into place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".benchmark_model-", suffix=".part")
    except OSError as error:
        raise DeviceError(
            f"cannot write to {path.parent} ({error.strerror or error}): make the cache folder writable"
        ) from None
    part = Path(temporary)
    try:
        with os.fdopen(handle, "wb") as out:
            digest = _stream(release, path, out, timeout_s)
        if digest != release.sha256:
            raise DeviceError(
                f"{release.url} has sha256 {digest}, not the pinned {release.sha256}: the server or "
                f"mirror serves another file, so nothing was kept"
            )
        with part.open("rb") as downloaded:
            problem = _elf_problem(downloaded.read(20), release.abi)
        if problem:
            raise DeviceError(f"{release.url} {problem}: the manifest pins the wrong build for {release.abi}")
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def _stream(release: Release, path: Path, out: BinaryIO, timeout_s: float) -> str:
    """Copy the download into `out`; its sha256. Every failure of the transfer is one line naming the URL."""
    digest = hashlib.sha256()
    request = urllib.request.Request(release.url, headers={"User-Agent": "android_bench"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (OSError, http.client.HTTPException, ValueError) as error:
        raise DeviceError(
            f"cannot download benchmark_model {release.version} for {release.abi} from {release.url} "
            f"({_reason(error)}): download it yourself and save it as {path}, or pass "
            f"--benchmark-binary PATH"
        ) from None
    return digest.hexdigest()


def _reason(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__

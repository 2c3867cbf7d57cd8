"""Fetching benchmark_model for a phone's ABI (android_bench.binary) from a loopback HTTP server on 127.0.0.1: the
pinned checksum and the ELF machine are checked before a file is kept, the cache is used once filled, and every
refusal is one line that says what to do."""

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from loopback_adbd import fake_elf

from android_bench.adb import DeviceError
from android_bench.binary import MANIFEST, cached_path, fetch_binary, load_manifest

ARM64 = ("arm64-v8a", "armeabi-v7a", "armeabi")  # what an arm64 phone lists, primary first
PATH = "9.9.9/android_arm64/benchmark_model"


class FileServer:
    """Serves `files` (URL path -> bytes) over HTTP on 127.0.0.1 and counts the requests; anything else is a 404."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/litert"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    served = FileServer({f"/litert/{PATH}": fake_elf("arm64-v8a")})
    yield served
    served.stop()


def write_manifest(folder: Path, sha256: str, base_url: str = "http://127.0.0.1:9/unreachable") -> Path:
    path = folder / "manifest.toml"
    path.write_text(
        f'base_url = "{base_url}"\n\n[abi.arm64-v8a]\nversion = "9.9.9"\npath = "{PATH}"\nsha256 = "{sha256}"\n'
    )
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def leftovers(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []


def test_pinned_download_from_a_mirror_is_checked_cached_and_then_reused(tmp_path, server):
    manifest = write_manifest(tmp_path, sha256(fake_elf("arm64-v8a")))  # its base_url is dead: the mirror serves
    binary = fetch_binary(ARM64, tmp_path / "cache", manifest=manifest, mirror=server.url)
    assert binary.path == tmp_path / "cache" / "benchmark_model" / "9.9.9" / "arm64-v8a" / "benchmark_model"
    assert binary.path.read_bytes() == fake_elf("arm64-v8a") and (binary.version, binary.pinned) == ("9.9.9", True)
    assert leftovers(tmp_path / "cache") == [binary.path]  # no temporary file left behind
    assert server.requests == [f"/litert/{PATH}"]
    again = fetch_binary(ARM64, tmp_path / "cache", manifest=manifest, mirror=server.url)
    assert again == binary and len(server.requests) == 1  # the cache answers, the server is not asked again


def test_wrong_checksum_is_refused_and_nothing_kept(tmp_path, server):
    manifest = write_manifest(tmp_path, "ab" * 32, base_url=server.url)
    with pytest.raises(DeviceError) as excinfo:
        fetch_binary(ARM64, tmp_path / "cache", manifest=manifest)
    message = one_line_error(excinfo)
    assert f"{server.url}/{PATH} has sha256 {sha256(fake_elf('arm64-v8a'))}, not the pinned {'ab' * 32}" in message
    assert leftovers(tmp_path / "cache") == []


def test_wrong_elf_machine_is_refused_and_nothing_kept(tmp_path, server):
    server.files[f"/litert/{PATH}"] = fake_elf("x86_64")
    manifest = write_manifest(tmp_path, sha256(fake_elf("x86_64")), base_url=server.url)
    with pytest.raises(DeviceError) as excinfo:
        fetch_binary(ARM64, tmp_path / "cache", manifest=manifest)
    assert "is built for x86_64, not arm64-v8a" in one_line_error(excinfo)
    assert leftovers(tmp_path / "cache") == []


def test_unreachable_server_says_what_to_download_and_where_to_put_it(tmp_path, server):
    manifest = write_manifest(tmp_path, sha256(fake_elf("arm64-v8a")), base_url=server.url)
    server.stop()
    with pytest.raises(DeviceError) as excinfo:
        fetch_binary(ARM64, tmp_path / "cache", manifest=manifest, timeout_s=5)
    message = one_line_error(excinfo)
    cached = tmp_path / "cache" / "benchmark_model" / "9.9.9" / "arm64-v8a" / "benchmark_model"
    assert message.startswith(f"cannot download benchmark_model 9.9.9 for arm64-v8a from {server.url}/{PATH} (")
    assert f"save it as {cached}" in message and "--benchmark-binary" in message
    assert leftovers(tmp_path / "cache") == []


def test_missing_file_on_the_server_is_one_line(tmp_path, server):
    manifest = write_manifest(tmp_path, sha256(fake_elf("arm64-v8a")), base_url=server.url + "/moved")
    with pytest.raises(DeviceError) as excinfo:
        fetch_binary(ARM64, tmp_path / "cache", manifest=manifest)
    assert "(HTTP 404 Not Found)" in one_line_error(excinfo)


def test_unpinned_checksum_downloads_nothing_and_a_copy_saved_by_hand_is_used_as_the_users_own(tmp_path, server):
    manifest = write_manifest(tmp_path, "", base_url=server.url)
    cached = tmp_path / "cache" / "benchmark_model" / "9.9.9" / "arm64-v8a" / "benchmark_model"
    with pytest.raises(DeviceError) as excinfo:
        fetch_binary(ARM64, tmp_path / "cache", manifest=manifest)
    message = one_line_error(excinfo)
    assert f"has no pinned sha256 in {manifest}" in message and f"{server.url}/{PATH}" in message
    assert f"save that copy as {cached}" in message and "--benchmark-binary" in message
    assert server.requests == []  # nothing unchecked is fetched, not even to look at it
    cached.parent.mkdir(parents=True)
    cached.write_bytes(fake_elf("arm64-v8a"))
    binary = fetch_binary(ARM64, tmp_path / "cache", manifest=manifest)
    assert (binary.path, binary.version, binary.pinned) == (cached, "9.9.9", False)
    cached.write_bytes(fake_elf("x86_64"))  # the wrong build saved by hand is still refused
    with pytest.raises(DeviceError) as excinfo:
        fetch_binary(ARM64, tmp_path / "cache", manifest=manifest)
    assert "is built for x86_64, not arm64-v8a: delete it" in one_line_error(excinfo)


def test_cached_copy_that_no_longer_matches_its_pin_is_refused(tmp_path, server):
    manifest = write_manifest(tmp_path, sha256(fake_elf("arm64-v8a")), base_url=server.url)
    binary = fetch_binary(ARM64, tmp_path / "cache", manifest=manifest)
    binary.path.write_bytes(fake_elf("arm64-v8a") + b"tampered")
    with pytest.raises(DeviceError) as excinfo:
        fetch_binary(ARM64, tmp_path / "cache", manifest=manifest)
    assert f"{binary.path} has sha256 " in one_line_error(excinfo) and "delete it" in str(excinfo.value)
    assert len(server.requests) == 1


def test_phone_without_a_pinned_build_is_one_line(tmp_path):
    with pytest.raises(DeviceError) as excinfo:
        fetch_binary(("x86_64", "x86"), tmp_path / "cache")
    message = one_line_error(excinfo)
    assert "no benchmark_model download for a phone running x86_64, x86 (the manifest has arm64-v8a)" in message
    assert "--benchmark-binary" in message


def test_manifests(tmp_path):
    shipped = load_manifest()
    assert shipped["arm64-v8a"].url == (
        "https://storage.googleapis.com/litert/binaries/2.2.0/android_arm64/benchmark_model"
    )
    assert shipped["arm64-v8a"].sha256 == ""  # Google publishes none; see android_bench/binary.py
    mirrored = load_manifest(MANIFEST, mirror="http://mirror.example/litert/")
    assert mirrored["arm64-v8a"].url == "http://mirror.example/litert/2.2.0/android_arm64/benchmark_model"
    assert cached_path(tmp_path, shipped["arm64-v8a"]) == tmp_path / "benchmark_model/2.2.0/arm64-v8a/benchmark_model"
    for sha, words in (("12345", "gives arm64-v8a the sha256 '12345'"), ('"\nversion = "1"', "Cannot overwrite")):
        with pytest.raises(DeviceError) as excinfo:
            load_manifest(write_manifest(tmp_path, sha))
        assert words in one_line_error(excinfo)
    (tmp_path / "no_path.toml").write_text('base_url = "http://x"\n[abi.x86]\nversion = "1"\nsha256 = ""\n')
    with pytest.raises(DeviceError) as excinfo:
        load_manifest(tmp_path / "no_path.toml")
    assert "lacks 'path' for x86" in one_line_error(excinfo)

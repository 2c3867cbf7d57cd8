"""A loopback test device: a small adbd written in Python, for tests only. No phone is involved.

It listens on 127.0.0.1 (an ephemeral port) and speaks the real ADB wire protocol, so that both the adb-shell
library and Debian's stock `adb` client talk to it exactly as they talk to a phone over `adb tcpip`:

- packets: a 24-byte little-endian header (command, arg0, arg1, data length, data checksum, magic = command ^
  0xFFFFFFFF) and a payload; CNXN, AUTH (TOKEN / SIGNATURE / RSAPUBLICKEY, the signature really checked against
  the authorised public keys), OPEN -> OKAY, WRTE/OKAY flow control, CLSE;
- services: `shell:<cmd>` (legacy, raw output, stderr merged into stdout) and `sync:` (SEND, DATA up to 64 KiB,
  DONE, RECV, STAT, LIST, QUIT; OKAY / FAIL). The CNXN banner advertises no features, so clients fall back to
  exactly these two.

Commands run in a sandbox folder that stands for the device filesystem (device path `/x/y` is `root/x/y`; it
holds /data/local/tmp, /sys/class/thermal, /sys/devices/system/cpu and /proc/cpuinfo). The shell understands the
handful of commands a benchmark runner needs (getprop, echo, cat, ls, chmod, rm, mkdir -p, df, taskset, nproc,
sha256sum), joined with `;` or `&&`, and executes pushed files: a file is runnable when it is an ELF for one of the
device's ABIs (checked by e_machine), and then it behaves as `benchmark_model`. That benchmark_model really times
the pushed `.tflite` with ai-edge-litert's Interpreter on the host and prints what the real tool prints; which of
the two tools it plays is the `benchmark_dialect` option: "tflite" (TFLite's tool, the default) or "litert" (LiteRT's
CompiledModel tool, the one LiteRT publishes per version). A pushed ELF for another architecture fails as Android's
shell does ("not executable: 64-bit ELF file").

Fault injection (`Faults`, `Thermal`): cut the connection in the middle of a benchmark run, answer slowly, heat up
with every run (thermal zone files rise and cool down with time), lose the pushed binary, and refuse pushes with
"No space left on device".
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import posixpath
import queue
import resource
import secrets
import shlex
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

A_VERSION = 0x01000000  # checksummed packets: what both the adb-shell library and the stock client speak
MAX_PAYLOAD = 256 * 1024
SYNC_DATA_MAX = 64 * 1024
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
ABI_MACHINES = {"arm64-v8a": 183, "armeabi-v7a": 40, "armeabi": 40, "x86_64": 62, "x86": 3}
ABI_LISTS = {"arm64-v8a": "arm64-v8a,armeabi-v7a,armeabi", "x86_64": "x86_64,x86"}
PHONE_CPUS_KHZ = (1800000,) * 4 + (2400000,) * 2 + (2850000,) * 2  # a 4+2+2 big.LITTLE phone: cpu6-7 are big


def command_id(name: bytes) -> int:
    return struct.unpack("<I", name)[0]


CNXN, AUTH, OPEN, OKAY, WRTE, CLSE = (command_id(c) for c in (b"CNXN", b"AUTH", b"OPEN", b"OKAY", b"WRTE", b"CLSE"))


def pack_packet(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    checksum = sum(data) & 0xFFFFFFFF
    return struct.pack("<6I", command, arg0, arg1, len(data), checksum, command ^ 0xFFFFFFFF) + data


def fake_elf(abi: str = "arm64-v8a") -> bytes:
    """A minimal ELF header for `abi`: enough for the loopback device (and the runner's local check) to treat it
    as a benchmark_model built for that ABI."""
    machine = ABI_MACHINES[abi]
    elf_class = 2 if abi in ("arm64-v8a", "x86_64") else 1
    ident = b"\x7fELF" + bytes([elf_class, 1, 1]) + bytes(9)
    return ident + struct.pack("<HHI", 2, machine, 1) + bytes(48)


def decode_android_pubkey(text: str) -> rsa.RSAPublicKey:
    """adbkey.pub: base64 of Android's RSAPublicKey struct (modulus size in words, n0inv, modulus and rr as
    little-endian 256-byte numbers, exponent), then ' user@host'."""
    blob = base64.b64decode(text.split()[0])
    words, _n0inv, modulus, _rr, exponent = struct.unpack("<II256s256sI", blob)
    assert words == 64, "only 2048-bit adb keys exist"
    return rsa.RSAPublicNumbers(exponent, int.from_bytes(modulus, "little")).public_key()


@dataclass
class Faults:
    """Switches for the failures a real phone shows."""

    delay_s: float = 0.0  # pause before answering each OPEN: a slow phone or a congested Wi-Fi link
    drop_at_run: int = 0  # the benchmark run with this number (1 = the first) cuts the TCP connection half-way
    lose_binary: int = 0  # this many executions find the pushed file gone (a cleaner app wiped /data/local/tmp)
    disk_full: bool = False  # sync SEND answers FAIL "write failed: No space left on device"


@dataclass
class Thermal:
    """The device heats by `heat_per_run_c` with every benchmark run and cools at `cool_c_per_s` towards
    `ambient_c`. The CPU zones report this temperature (in millidegrees, as Linux does); the battery zone stays at
    ambient; one zone has no readable temp, as on real phones."""

    ambient_c: float = 30.0
    heat_per_run_c: float = 0.0
    cool_c_per_s: float = 1.0
    _temp_c: float | None = field(default=None, init=False)
    _since: float = field(default_factory=time.monotonic, init=False)

    def now_c(self) -> float:
        start = self.ambient_c if self._temp_c is None else self._temp_c
        return max(self.ambient_c, start - self.cool_c_per_s * (time.monotonic() - self._since))

    def heat(self) -> None:
        self._temp_c, self._since = self.now_c() + self.heat_per_run_c, time.monotonic()


class ConnectionDropped(Exception):
    """Raised inside a service to make the device cut the TCP connection, as a phone does when unplugged."""


class StreamClosed(Exception):
    """The host closed the stream a service was writing to; the service just ends."""


class LoopbackDevice:
    """The loopback test device: start it, point a client at `serial`, stop it (or use it as a context manager).
    `authorized_keys` are adbkey.pub contents; the sandbox at `root` persists across connections, like storage."""

    def __init__(
        self,
        root: Path,
        authorized_keys: Iterable[str],
        *,
        model: str = "Loopback",
        abi: str = "arm64-v8a",
        cpu_max_khz: tuple[int, ...] = PHONE_CPUS_KHZ,
        thermal: Thermal | None = None,
        faults: Faults | None = None,
        benchmark_dialect: str = "tflite",
    ):
        self.root = Path(root)
        self.benchmark_tool = _BENCHMARK_TOOLS[benchmark_dialect]
        self.keys = [decode_android_pubkey(k) for k in authorized_keys]
        self.cpu_max_khz = cpu_max_khz
        self.thermal, self.faults = thermal or Thermal(), faults or Faults()
        self.props = {
            "ro.product.model": model,
            "ro.product.cpu.abi": abi,
            "ro.product.cpu.abilist": ABI_LISTS.get(abi, abi),
            "ro.build.version.release": "14",
            "ro.soc.model": "Loopback SoC",
            "ro.build.id": "LOOP.1",
            "ro.product.name": "loopback",
            "ro.product.device": "loopback",
            "ro.build.fingerprint": "loopback/loopback/loopback:14/LOOP.1/1:user/release-keys",
        }
        self.services: list[str] = []  # every service opened, for tests to see what a client asked for
        self.runs = 0  # benchmark runs started
        self.run_spans: list[tuple[float, float]] = []  # (start, end) monotonic seconds of each finished run
        self._connections: list[_Connection] = []
        self._listener: socket.socket | None = None
        self._populate()

    @property
    def banner(self) -> bytes:
        """The CNXN banner: identity properties and an empty feature list, so clients use legacy shell: and sync:."""
        props = ";".join(
            f"{key}={self.props[key]}" for key in ("ro.product.name", "ro.product.model", "ro.product.device")
        )
        return f"device::{props};features=".encode()

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> LoopbackDevice:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._listener.close()
        for connection in list(self._connections):
            connection.abort()

    def __enter__(self) -> LoopbackDevice:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def path(self, device_path: str) -> Path:
        """The sandbox file standing for an absolute device path."""
        return self.root / posixpath.normpath("/" + device_path).lstrip("/")

    def refresh_thermal(self) -> None:
        cpu_mc = str(round(self.thermal.now_c() * 1000)) + "\n"
        ambient_mc = str(round(self.thermal.ambient_c * 1000)) + "\n"
        for zone, temp in (("thermal_zone0", cpu_mc), ("thermal_zone1", cpu_mc), ("thermal_zone2", ambient_mc)):
            self.path(f"/sys/class/thermal/{zone}/temp").write_text(temp)

    def _populate(self) -> None:
        self.path("/data/local/tmp").mkdir(parents=True, exist_ok=True)
        for zone, kind in (
            ("thermal_zone0", "cpu-big"),
            ("thermal_zone1", "cpu-little"),
            ("thermal_zone2", "battery"),
            ("thermal_zone3", "modem"),
        ):
            folder = self.path(f"/sys/class/thermal/{zone}")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "type").write_text(kind + "\n")
        self.path("/sys/class/thermal/cooling_device0").mkdir(exist_ok=True)
        self.refresh_thermal()
        blocks = []
        for cpu, khz in enumerate(self.cpu_max_khz):
            freq = self.path(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq")
            freq.parent.mkdir(parents=True, exist_ok=True)
            freq.write_text(f"{khz}\n")
            part = "0xd44" if khz == max(self.cpu_max_khz) else "0xd05"
            blocks.append(
                f"processor\t: {cpu}\nBogoMIPS\t: 49.15\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 "
                f"crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\n"
                f"CPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: {part}\nCPU revision\t: 0\n"
            )
        cpuinfo = self.path("/proc/cpuinfo")
        cpuinfo.parent.mkdir(parents=True, exist_ok=True)
        cpuinfo.write_text("\n".join(blocks) + "\nHardware\t: Loopback\n")

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as adbd does
            connection = _Connection(self, sock)
            self._connections.append(connection)
            threading.Thread(target=connection.serve, daemon=True).start()


class _Stream:
    """One ADB stream (a service the host opened). Incoming WRTE payloads queue in `inbox` (None = closed);
    `ready` is set when the host has acknowledged our last WRTE."""

    def __init__(self, connection: _Connection, local_id: int, remote_id: int):
        self.connection, self.local_id, self.remote_id = connection, local_id, remote_id
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.ready = threading.Event()
        self.closed = False
        self._buffer = b""

    def write(self, data: bytes) -> None:
        for start in range(0, len(data), self.connection.max_payload):
            if self.closed:
                raise StreamClosed()
            self.ready.clear()
            self.connection.send(WRTE, self.local_id, self.remote_id, data[start : start + self.connection.max_payload])
            self.ready.wait()

    def read_exact(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            chunk = self.inbox.get()
            if chunk is None:
                return None
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def close(self) -> None:
        """Idempotent: whichever side closes first, CLSE goes out once."""
        with self.connection.lock:
            if self.closed:
                return
            self.closed = True
        self.inbox.put(None)
        self.ready.set()
        self.connection.send(CLSE, self.local_id, self.remote_id)


class _Connection:
    """One TCP connection: the handshake, then a packet loop that routes packets to streams; each stream's
    service runs in its own thread so that flow control (waiting for OKAY) never blocks the reader."""

    def __init__(self, device: LoopbackDevice, sock: socket.socket):
        self.device, self.sock = device, sock
        self.lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.max_payload = MAX_PAYLOAD

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        packet = pack_packet(command, arg0, arg1, data)
        with self.lock:
            self.sock.sendall(packet)

    def abort(self) -> None:
        """Cut the connection the hard way (no CLSE), as an unplugged cable does."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def serve(self) -> None:
        try:
            self._handshake()
            while True:
                self._dispatch(*self._read_packet())
        except (OSError, ConnectionError, ConnectionDropped):
            pass
        finally:
            self.abort()
            for stream in list(self.streams.values()):
                stream.closed = True
                stream.inbox.put(None)
                stream.ready.set()
            self.device._connections.remove(self)

    def _recv_exact(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("host closed the connection")
            data += chunk
        return data

    def _read_packet(self) -> tuple[int, int, int, bytes]:
        command, arg0, arg1, length, checksum, magic = struct.unpack("<6I", self._recv_exact(24))
        if magic != command ^ 0xFFFFFFFF or length > 1024 * 1024:
            raise ConnectionError("corrupt packet header")
        data = self._recv_exact(length) if length else b""
        if sum(data) & 0xFFFFFFFF != checksum:
            raise ConnectionError("packet checksum mismatch")
        return command, arg0, arg1, data

    def _handshake(self) -> None:
        """CNXN from the host, then AUTH until a signature verifies against an authorised key. A key the device
        does not know (RSAPUBLICKEY) gets no answer, as on a phone whose 'Allow USB debugging?' prompt nobody
        taps; the host then times out or reports the device unauthorised."""
        command, _, max_payload, _ = self._read_packet()
        while command != CNXN:
            command, _, max_payload, _ = self._read_packet()
        self.max_payload = min(MAX_PAYLOAD, max_payload)
        while True:
            token = secrets.token_bytes(20)
            self.send(AUTH, AUTH_TOKEN, 0, token)
            command, kind, _, data = self._read_packet()
            if command == AUTH and kind == AUTH_SIGNATURE and self._verifies(token, data):
                self.send(CNXN, A_VERSION, MAX_PAYLOAD, self.device.banner)
                return
            if command == AUTH and kind == AUTH_RSAPUBLICKEY:
                while True:  # wait for the host to give up
                    self._read_packet()

    def _verifies(self, token: bytes, signature: bytes) -> bool:
        """adbd's check: PKCS#1 v1.5 with the SHA-1 DigestInfo, the 20-byte token standing as the digest."""
        for key in self.device.keys:
            try:
                key.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
                return True
            except (InvalidSignature, ValueError):
                continue
        return False

    def _dispatch(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == OPEN:
            self._open(arg0, data.rstrip(b"\0").decode())
            return
        stream = self.streams.get(arg1)
        if stream is None:
            return  # late packets for a stream already closed are ignored, as adbd does
        if command == WRTE:
            self.send(OKAY, stream.local_id, stream.remote_id)  # before the service can answer: keeps order
            stream.inbox.put(data)
        elif command == OKAY:
            stream.ready.set()
        elif command == CLSE:
            del self.streams[arg1]
            stream.close()

    def _open(self, remote_id: int, service: str) -> None:
        self.device.services.append(service)
        time.sleep(self.device.faults.delay_s)
        handler = (
            _shell_service
            if service.startswith("shell:") and service != "shell:"
            else (_sync_service if service == "sync:" else None)
        )
        if handler is None:
            self.send(CLSE, 0, remote_id)
            return
        stream = _Stream(self, self.next_id, remote_id)
        self.streams[stream.local_id] = stream
        self.next_id += 1
        self.send(OKAY, stream.local_id, remote_id)
        threading.Thread(target=self._run_service, args=(handler, stream, service), daemon=True).start()

    def _run_service(
        self, handler: Callable[[LoopbackDevice, _Stream, str], None], stream: _Stream, service: str
    ) -> None:
        try:
            handler(self.device, stream, service)
        except ConnectionDropped:
            self.abort()
            return
        except (StreamClosed, OSError):
            return
        except Exception as error:  # noqa: BLE001 - a loopback bug: show it to the client rather than hang it
            with suppress(StreamClosed, OSError):
                stream.write(f"loopback device error: {error!r}\n".encode())
        with suppress(OSError):
            stream.close()


# ----------------------------------------------------------------------------------------------------- sync:


def _sync_service(device: LoopbackDevice, stream: _Stream, _service: str) -> None:
    def reply(tag: bytes, *words: int, data: bytes = b"") -> None:
        stream.write(tag + struct.pack(f"<{len(words)}I", *words) + data)

    while (header := stream.read_exact(8)) is not None:
        tag, length = header[:4], struct.unpack("<I", header[4:])[0]
        if tag == b"QUIT":
            return
        raw_path = stream.read_exact(length)
        if raw_path is None:
            return
        path = raw_path.decode()
        if tag == b"STAT":
            target = device.path(path)
            info = target.stat() if target.exists() else None
            reply(b"STAT", *((info.st_mode, info.st_size, int(info.st_mtime)) if info else (0, 0, 0)))
        elif tag == b"LIST":
            folder = device.path(path)
            for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
                info = entry.stat()
                name = entry.name.encode()
                reply(b"DENT", info.st_mode, info.st_size, int(info.st_mtime), len(name), data=name)
            reply(b"DONE", 0, 0, 0, 0)
        elif tag == b"RECV":
            source = device.path(path)
            if not source.is_file():
                message = b"open failed: No such file or directory"
                reply(b"FAIL", len(message), data=message)
                continue
            content = source.read_bytes()
            for start in range(0, len(content), SYNC_DATA_MAX):
                chunk = content[start : start + SYNC_DATA_MAX]
                reply(b"DATA", len(chunk), data=chunk)
            reply(b"DONE", 0)
        elif tag == b"SEND":
            _receive_file(device, stream, path, reply)
        else:
            message = f"unknown sync command {tag!r}".encode()
            reply(b"FAIL", len(message), data=message)
            return


def _receive_file(device: LoopbackDevice, stream: _Stream, spec: str, reply: Callable[..., None]) -> None:
    """SEND "path,mode", then DATA chunks and DONE(mtime), answered OKAY or FAIL. A failure is reported once the
    upload is complete: adbd sends FAIL at once and drains the rest, but adb-shell only reads the reply after DONE
    and loses a FAIL that arrives mid-upload, so the loopback answers when both clients listen."""
    remote, _, mode = spec.rpartition(",")
    target = device.path(remote)
    content, failure = bytearray(), None
    while True:
        header = stream.read_exact(8)
        if header is None:
            return
        tag, size = header[:4], struct.unpack("<I", header[4:])[0]
        if tag == b"DONE":
            mtime = size  # DONE carries the file's modification time in its size field
            break
        if tag != b"DATA" or size > SYNC_DATA_MAX:
            failure = failure or f"invalid data message {tag!r} of {size} bytes"
            break
        chunk = stream.read_exact(size)
        if chunk is None:
            return
        content += chunk
        if device.faults.disk_full:
            failure = failure or "write failed: No space left on device"
    if failure is None and (target.is_dir() or not target.parent.is_dir()):
        failure = "open failed: " + ("Is a directory" if target.is_dir() else "No such file or directory")
    if failure:
        reply(b"FAIL", len(failure), data=failure.encode())
        return
    target.write_bytes(bytes(content))
    target.chmod(int(mode) & 0o777)
    os.utime(target, (mtime, mtime))
    reply(b"OKAY", 0)


# ---------------------------------------------------------------------------------------------------- shell:


def _shell_service(device: LoopbackDevice, stream: _Stream, service: str) -> None:
    """`sh -c` for the commands below, joined with `;` or `&&`; pipes and redirections are refused with a message."""
    command_line = service[len("shell:") :]
    device.refresh_thermal()

    def out(text: str) -> None:
        stream.write(text.encode())

    lexer = shlex.shlex(command_line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words, status = [], 0
    for token in list(lexer) + [";"]:
        if token in (";", "&&"):
            if words:
                status = _run(device, words, out)
            words = []
            if token == "&&" and status != 0:
                return
        elif set(token) <= set("();<>|&"):
            out(f"/system/bin/sh: loopback shell: '{token}' is not supported\n")
            return
        else:
            words.append(token)


def _run(device: LoopbackDevice, words: list[str], out: Callable[[str], None]) -> int:
    name, args = words[0], words[1:]
    builtin = _COMMANDS.get(name)
    if builtin is not None:
        return builtin(device, args, out)
    return _execute(device, name, args, out, prefix="/system/bin/sh: ")


def _echo(device: LoopbackDevice, args: list[str], out: Callable[[str], None]) -> int:
    out(" ".join(args) + "\n")
    return 0


def _getprop(device: LoopbackDevice, args: list[str], out: Callable[[str], None]) -> int:
    if args:
        out(device.props.get(args[0], "") + "\n")
    else:
        out("".join(f"[{k}]: [{v}]\n" for k, v in sorted(device.props.items())))
    return 0


def _cat(device: LoopbackDevice, args: list[str], out: Callable[[str], None]) -> int:
    status = 0
    for name in args:
        target = device.path(name)
        if target.is_file():
            out(target.read_text(errors="replace"))
        else:
            out(f"cat: {name}: {'Is a directory' if target.is_dir() else 'No such file or directory'}\n")
            status = 1
    return status


def _ls(device: LoopbackDevice, args: list[str], out: Callable[[str], None]) -> int:
    status = 0
    for name in [a for a in args if not a.startswith("-")] or ["/"]:
        target = device.path(name)
        if target.is_dir():
            out("".join(entry.name + "\n" for entry in sorted(target.iterdir())))
        elif target.exists():
            out(name + "\n")
        else:
            out(f"ls: {name}: No such file or directory\n")
            status = 1
    return status


def _chmod(device: LoopbackDevice, args: list[str], out: Callable[[str], None]) -> int:
    mode, names = int(args[0], 8), args[1:]
    for name in names:
        if not device.path(name).exists():
            out(f"chmod: {name}: No such file or directory\n")
            return 1
        device.path(name).chmod(mode)
    return 0


def _rm(device: LoopbackDevice, args: list[str], out: Callable[[str], None]) -> int:
    force = "-f" in args
    for name in [a for a in args if not a.startswith("-")]:
        target = device.path(name)
        if target.is_file():
            target.unlink()
        elif not force:
            out(f"rm: {name}: No such file or directory\n")
            return 1
    return 0


def _mkdir(device: LoopbackDevice, args: list[str], out: Callable[[str], None]) -> int:
    parents = "-p" in args
    for name in [a for a in args if not a.startswith("-")]:
        try:
            device.path(name).mkdir(parents=parents, exist_ok=parents)
        except FileExistsError:
            out(f"mkdir: '{name}': File exists\n")
            return 1
    return 0


def _df(device: LoopbackDevice, args: list[str], out: Callable[[str], None]) -> int:
    """toybox df in 1K blocks; the loopback /data is a 64 GiB partition, full when the disk_full fault is on."""
    total = 64 * 1024 * 1024
    used = total if device.faults.disk_full else total // 4
    out(
        "Filesystem      1K-blocks     Used Available Use% Mounted on\n"
        f"/dev/block/dm-8 {total:9d} {used:8d} {total - used:9d} {round(100 * used / total):3d}% /data\n"
    )
    return 0


def _nproc(device: LoopbackDevice, args: list[str], out: Callable[[str], None]) -> int:
    out(f"{len(device.cpu_max_khz)}\n")
    return 0


def _sha256sum(device: LoopbackDevice, args: list[str], out: Callable[[str], None]) -> int:
    """toybox sha256sum: "HASH  NAME" per file."""
    status = 0
    for name in args:
        target = device.path(name)
        if target.is_file():
            out(f"{hashlib.sha256(target.read_bytes()).hexdigest()}  {name}\n")
        else:
            out(f"sha256sum: {name}: No such file or directory\n")
            status = 1
    return status


def _taskset(device: LoopbackDevice, args: list[str], out: Callable[[str], None]) -> int:
    """toybox taskset MASK COMMAND...: a mask naming no existing core is refused, as sched_setaffinity does."""
    mask = int(args[0], 16)
    if not mask & ((1 << len(device.cpu_max_khz)) - 1):
        out("taskset: sched_setaffinity: Invalid argument\n")
        return 1
    return _execute(device, args[1], args[2:], out, prefix="taskset: ")


_COMMANDS = {
    "echo": _echo,
    "getprop": _getprop,
    "cat": _cat,
    "ls": _ls,
    "chmod": _chmod,
    "rm": _rm,
    "mkdir": _mkdir,
    "df": _df,
    "nproc": _nproc,
    "sha256sum": _sha256sum,
    "taskset": _taskset,
}


def _execute(device: LoopbackDevice, name: str, args: list[str], out: Callable[[str], None], prefix: str) -> int:
    """Run a pushed file. Only an ELF for one of the device's ABIs runs (as benchmark_model); the error messages
    are those of Android's mksh."""
    target = device.path(name)
    if "/" in name and target.is_file() and device.faults.lose_binary > 0:
        device.faults.lose_binary -= 1
        target.unlink()
    if "/" not in name or not target.is_file():
        out(f"{prefix}{name}: inaccessible or not found\n")
        return 127
    if not target.stat().st_mode & stat.S_IXUSR:
        out(f"{prefix}{name}: can't execute: Permission denied\n")
        return 126
    header = target.read_bytes()[:20]
    accepted = {ABI_MACHINES[abi] for abi in device.props["ro.product.cpu.abilist"].split(",")}
    if header[:4] != b"\x7fELF":
        out(f"{prefix}{name}: not executable: magic {header[:2].hex().upper()}\n")
        return 126
    if struct.unpack("<H", header[18:20])[0] not in accepted:
        out(f"{prefix}{name}: not executable: {32 * header[4]}-bit ELF file\n")
        return 126
    return device.benchmark_tool(device, name, args, out).run()


# --------------------------------------------------------------------------------------------- benchmark_model


class _BenchmarkModel:
    """TFLite's benchmark_model (//tflite/tools/benchmark), emulated: parses its flags, times the graph with
    ai-edge-litert's Interpreter on the host (warm-up, then timed invokes, both honouring the run counts and minimum
    durations) and prints what the real tool prints, in its current format (StatWithPercentiles lines, the
    'Inference timings in us' line, and with --enable_op_profiling the profile summariser's tables). Per-op
    times: with XNNPACK the whole graph is one delegate node, as builds before XNNPACK had its own profiler report
    it; without it, each op's row is its share of every measured invoke (`_alone_shares`)."""

    FLAGS = {
        "num_runs": ("Min num runs", 50),
        "min_secs": ("Min runs duration (seconds)", 1.0),
        "max_secs": ("Max runs duration (seconds)", 150.0),
        "num_threads": ("Num threads", -1),
        "warmup_runs": ("Min warmup runs", 1),
        "warmup_min_secs": ("Min warmup runs duration (seconds)", 0.5),
        "graph": ("Graph", ""),
        "enable_op_profiling": ("Enable op profiling", False),
        "use_xnnpack": ("Use xnnpack", True),
        "help": ("Help", False),
    }

    def __init__(self, device: LoopbackDevice, argv0: str, args: list[str], out: Callable[[str], None]):
        self.device, self.argv0, self.out = device, argv0, out
        self.given: dict[str, object] = {}
        self.unknown: list[str] = []
        for arg in args:
            key, _, value = arg.lstrip("-").partition("=")
            if arg.startswith("--") and key in self.FLAGS:
                default = self.FLAGS[key][1]
                is_bool = isinstance(default, bool)
                self.given[key] = value.lower() in ("1", "true", "") if is_bool else type(default)(value)
            else:
                self.unknown.append(arg)

    def param(self, key: str):
        return self.given.get(key, self.FLAGS[key][1])

    def log(self, level: str, message: str) -> None:
        self.out(f"{level}: {message}\n")

    def usage(self) -> str:
        flags = "".join(f"\t--{k}={v[1]}\t{type(v[1]).__name__}\toptional\t{v[0]}\n" for k, v in self.FLAGS.items())
        return f"usage: {self.argv0}\nFlags:\n{flags}"

    def uses_xnnpack(self) -> bool:
        return self.param("use_xnnpack")

    def run(self) -> int:
        self.log("INFO", "STARTING!")
        if self.given.get("help"):
            self.log("ERROR", self.usage())
            return self.fail()
        if self.unknown:
            self.log("WARN", "Unconsumed cmdline flags: " + " ".join(self.unknown))
        self.log("INFO", "Log parameter values verbosely: [0]")
        for key, value in self.given.items():
            shown = int(value) if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else value
            self.log("INFO", f"{self.FLAGS[key][0]}: [{shown}]")
        graph = self.device.path(self.param("graph"))
        if not graph.is_file():
            self.log("ERROR", f"Could not open '{self.param('graph')}'.")
            self.log("ERROR", f"Failed to mmap model {self.param('graph')}")
            return self.fail()
        self.log("INFO", f"Loaded model {self.param('graph')}")
        rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter_ns()
        try:
            interpreter = self.interpreter(graph)
        except (ValueError, RuntimeError) as error:
            self.log("ERROR", f"Failed to construct interpreter: {error}")
            return self.fail()
        init_us = (time.perf_counter_ns() - started) // 1000
        rss_init = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if self.uses_xnnpack():
            self.log("INFO", "Created TensorFlow Lite XNNPACK delegate for CPU.")
        self.log("INFO", f"The input model file size (MB): {graph.stat().st_size / 1e6:g}")
        self.log("INFO", f"Initialized session in {init_us / 1e3:g}ms.")
        self.device.runs += 1
        run_started = time.monotonic()
        warmup = self.timed_runs(interpreter, self.param("warmup_runs"), self.param("warmup_min_secs"))
        if self.device.runs == self.device.faults.drop_at_run:
            self.log("INFO", self.running_line(self.param("num_runs"), self.param("min_secs")))
            raise ConnectionDropped("fault injection: connection cut mid-run")
        inference = self.timed_runs(interpreter, self.param("num_runs"), self.param("min_secs"))
        self.device.thermal.heat()
        self.device.run_spans.append((run_started, time.monotonic()))
        rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.report(
            interpreter, init_us, warmup, inference, (rss_init - rss_start) / 1024, (rss_end - rss_start) / 1024
        )
        return 0

    def report(
        self, interpreter, init_us: int, warmup: list[int], inference: list[int], init_mb: float, overall_mb: float
    ) -> None:
        """BenchmarkLoggingListener::OnBenchmarkEnd, then the profiling listener's tables."""
        self.log(
            "INFO",
            f"Inference timings in us: Init: {init_us}, First inference: {warmup[0] if warmup else 0}, "
            f"Warmup (avg): {_mean(warmup):g}, Inference (avg): {_mean(inference):g}",
        )
        self.log(
            "INFO",
            "Note: as the benchmark tool itself affects memory footprint, the following is only "
            "APPROXIMATE to the actual memory footprint of the model at runtime. Take the information "
            "at your discretion.",
        )
        self.log(
            "INFO", f"Memory footprint delta from the start of the tool (MB): init={init_mb:g} overall={overall_mb:g}"
        )
        if self.param("enable_op_profiling"):
            self.log(
                "INFO",
                "Profiling Info for Benchmark Initialization:\n"
                + _profile_tables([("AllocateTensors", "AllocateTensors/0", [init_us])]),
            )
            self.log(
                "INFO",
                "Operator-wise Profiling Info for Regular Benchmark Runs:\n"
                + _profile_tables(self.op_rows(interpreter, inference)),
            )

    def fail(self) -> int:
        self.log("ERROR", "Benchmarking failed.")
        return 1

    def interpreter(self, graph: Path):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if self.uses_xnnpack() else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        threads = self.param("num_threads")
        interpreter = Interpreter(
            model_path=str(graph), num_threads=threads if threads > 0 else None, experimental_op_resolver_type=resolver
        )
        interpreter.allocate_tensors()
        rng = np.random.default_rng(0)
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], rng.standard_normal(detail["shape"]).astype(detail["dtype"]))
        return interpreter

    def running_line(self, runs: int, min_secs: float) -> str:
        return (
            f"Running benchmark for at least {runs} iterations and at least {min_secs:g} seconds but terminate "
            f"if exceeding {self.param('max_secs'):g} seconds."
        )

    def timed_runs(self, interpreter, runs: int, min_secs: float) -> list[int]:
        """BenchmarkModel::Run: at least `runs` invokes and at least `min_secs`, at most max_secs."""
        self.log("INFO", self.running_line(runs, min_secs))
        samples: list[int] = []
        start = time.perf_counter()
        while (
            len(samples) < runs or time.perf_counter() - start < min_secs
        ) and time.perf_counter() - start <= self.param("max_secs"):
            t0 = time.perf_counter_ns()
            interpreter.invoke()
            samples.append((time.perf_counter_ns() - t0) // 1000)
        self.log("INFO", _stat_line(samples, percentiles=True) + "\n")
        return samples

    def op_rows(self, interpreter, samples_us: list[int]) -> list[tuple[str, str, list[int]]]:
        ops = interpreter._get_ops_details()
        names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
        if self.param("use_xnnpack"):
            outputs = ", ".join(names.get(i, "") for i in ops[-1]["outputs"])
            return [("TfLiteXNNPackDelegate", f"[{outputs}]:{len(ops)}", samples_us)]
        shares = _alone_shares(self.device.path(self.param("graph")), [op["index"] for op in ops], self.interpreter)
        return [
            (
                op["op_name"],
                f"[{', '.join(names.get(i, '') for i in op['outputs'])}]:{op['index']}",
                [int(s * share) for s in samples_us],
            )
            for op, share in zip(ops, shares)
        ]


# How XNNPACK names the operators a few TFLite ops become (its profiler reports these); other ops keep their name.
_XNNPACK_OPERATORS = {
    "CONV_2D": "Convolution (NHWC, F32) IGEMM",
    "DEPTHWISE_CONV_2D": "Convolution (NHWC, F32) DWConv",
    "FULLY_CONNECTED": "Fully Connected (NC, F32) GEMM",
    "ADD": "Add (ND, F32)",
}


class _LiteRtBenchmarkModel(_BenchmarkModel):
    """LiteRT's CompiledModel benchmark_model (//litert/tools, 2.2), emulated on the same engine: its flags (no
    --use_xnnpack, as the CPU always runs XNNPACK, and --use_profiler for op profiling), its --help (not a flag of
    its own: main() prints the NPU vendor flags, the shared flag parser the usage, and the tool exits 0), its
    BENCHMARK RESULTS block (LITERT_LOG lines, "[file:line]" after the level) and its profiler summariser's
    space-padded tables. The real profiler sees each XNNPACK operator (constant fp16 weights are unpacked when the
    model loads, so their DEQUANTIZE ops never run); the loopback gives each op its share of every invoke
    (`_alone_shares`), names them as XNNPACK does, and counts them over every run since start-up, warm-up
    included."""

    FLAGS = {
        "num_runs": ("Min num runs", 50),
        "min_secs": ("Min runs duration (seconds)", 1.0),
        "max_secs": ("Max runs duration (seconds)", 150.0),
        "num_threads": ("Num threads", -1),
        "warmup_runs": ("Min warmup runs", 1),
        "warmup_min_secs": ("Min warmup runs duration (seconds)", 0.5),
        "graph": ("Graph", ""),
        "use_cpu": ("Use CPU", True),
        "use_gpu": ("Use GPU", False),
        "use_profiler": ("Use profiler", False),
    }

    def uses_xnnpack(self) -> bool:
        return True

    def run(self) -> int:
        if "--help" in self.unknown or "-h" in self.unknown:
            self.out("\n  NPU Vendor Flags from LiteRT:\n    --qualcomm_log_level (QNN log level); default: info;\n\n")
            self.log("INFO", "STARTING!")
            self.log("ERROR", self.usage())
            return 0
        return super().run()

    def report(
        self, interpreter, init_us: int, warmup: list[int], inference: list[int], init_mb: float, overall_mb: float
    ) -> None:
        """BenchmarkLoggingListener::OnBenchmarkEnd of litert/tools/benchmark_litert_model.h."""

        def log(line: int, message: str) -> None:
            self.log("INFO", f"[benchmark_litert_model.h:{line}] {message}")

        log(89, "\n========== BENCHMARK RESULTS ==========")
        log(94, f"Model initialization: {init_us / 1e3:.2f} ms")
        log(95, f"Warmup (first):       {(warmup[0] if warmup else 0) / 1e3:.2f} ms")
        log(97, f"Warmup (avg):         {_mean(warmup) / 1e3:.2f} ms ({len(warmup)} runs)")
        log(99, f"Inference (avg):      {_mean(inference) / 1e3:.2f} ms ({len(inference)} runs)")
        if inference:
            log(103, f"Inference (min):      {min(inference) / 1e3:.2f} ms")
            log(105, f"Inference (max):      {max(inference) / 1e3:.2f} ms")
            log(107, f"Inference (std):      {float(np.std(inference)) / 1e3:.2f}")
        else:
            log(110, "No inference runs were performed.")
        log(117, "No throughput data available (throughput <= 0).")
        log(124, "\nMemory Usage:")
        log(125, f"Init footprint:       {init_mb:.2f} MB")
        log(127, f"Overall footprint:    {overall_mb:.2f} MB")
        log(134, "Peak memory usage not available. (peak_mem_mb <= 0)")
        log(138, "======================================\n")
        if self.param("use_profiler"):
            log(192, "\n" + _litert_profile(self.op_rows(interpreter, warmup + inference)))

    def op_rows(self, interpreter, samples_us: list[int]) -> list[tuple[str, str, list[int]]]:
        graph = self.device.path(self.param("graph"))
        ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]  # the graph's own ops
        ops = [op for op in ops if not (op["op_name"] == "DEQUANTIZE" and _reads_constant(graph, op["index"]))]
        shares = _alone_shares(graph, [op["index"] for op in ops], self.interpreter)
        return [
            (
                f"Delegate/{_XNNPACK_OPERATORS.get(op['op_name'], op['op_name'])}",
                f"[Delegate]:{op['index']}",
                [int(s * share) for s in samples_us],
            )
            for op, share in zip(ops, shares)
        ]


_BENCHMARK_TOOLS = {"tflite": _BenchmarkModel, "litert": _LiteRtBenchmarkModel}


def _is_constant(model, tensor_index: int) -> bool:
    buffer = model.buffers[model.subgraphs[0].tensors[tensor_index].buffer]
    return buffer.data is not None


def _reads_constant(graph: Path, index: int) -> bool:
    model = schema.ModelT.InitFromPackedBuf(graph.read_bytes(), 0)
    return all(_is_constant(model, t) for t in model.subgraphs[0].operators[index].inputs if t >= 0)


def _op_alone(graph: bytes, index: int) -> bytes:
    """Op `index` of a model cut out as a model of its own: its non-constant inputs become the model's inputs,
    and constant weights that a DEQUANTIZE turns float come along with it."""
    model = schema.ModelT.InitFromPackedBuf(graph, 0)
    subgraph = model.subgraphs[0]
    op = subgraph.operators[index]
    producer = {t: other for other in subgraph.operators for t in other.outputs}
    weights = [
        producer[t]
        for t in op.inputs
        if t in producer and all(_is_constant(model, w) for w in producer[t].inputs if w >= 0)
    ]
    produced = {t for w in weights for t in w.outputs}
    subgraph.operators = [*weights, op]
    subgraph.inputs = [t for t in op.inputs if t >= 0 and t not in produced and not _is_constant(model, t)]
    subgraph.outputs = list(op.outputs)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _alone_shares(graph: Path, indices: list[int], interpreter_for: Callable[[Path], object]) -> list[float]:
    """Each listed op's share of an invoke: its fastest time alone (cut out of the graph, on the same engine and
    threads), over the sum of theirs. The loopback cannot see inside an invoke from Python, so this stands in for
    the real profiler: the rows add up to each measured invoke and divide it as the ops' own times do."""
    if len(indices) == 1:
        return [1.0]
    data, alone = graph.read_bytes(), []
    for index in indices:
        path = graph.with_name(f".alone-{index}-{graph.name}")
        path.write_bytes(_op_alone(data, index))
        try:
            interpreter = interpreter_for(path)
            for _ in range(10):
                interpreter.invoke()
            samples = []
            for _ in range(30):
                started = time.perf_counter_ns()
                interpreter.invoke()
                samples.append(time.perf_counter_ns() - started)
            alone.append(float(min(samples)))  # other load only ever slows an invoke down
        finally:
            path.unlink()
    total = sum(alone) or 1.0
    return [t / total for t in alone]


def _mean(samples: list[int]) -> float:
    """Stat::avg(): NaN without samples, which the tool prints as "nan"."""
    return sum(samples) / len(samples) if samples else float("nan")


def _stat_line(samples: list[int], percentiles: bool) -> str:
    """tensorflow::Stat::OutputToStream (and StatWithPercentiles' p5/median/p95), byte for byte."""
    if not samples:
        return "count=0"
    count, first, newest = len(samples), samples[0], samples[-1]
    if min(samples) == max(samples):
        line = f"count={count} curr={newest}" + ("(all same)" if count > 1 else "")
    else:
        avg = _mean(samples)
        std = int(np.sqrt(max(0.0, sum(s * s for s in samples) / count - avg * avg)))
        line = f"count={count} first={first} curr={newest} min={min(samples)} max={max(samples)} avg={avg:g} std={std}"
    if percentiles:
        ordered = sorted(samples)
        line += "".join(f" {k}={ordered[count * p // 100]}" for k, p in (("p5", 5), ("median", 50), ("p95", 95)))
    return line


def _field(value: str, width: int) -> str:
    return "\t" + value.rjust(width)


def _profile_tables(rows: list[tuple[str, str, list[int]]]) -> str:
    """The profile summariser's text (StatsCalculator::GetOutputString + GetShortSummary) for nodes given as
    (type, name, per-run microseconds), in run order."""
    runs = len(rows[0][2])
    totals = [sum(samples) for _, _, samples in rows]
    grand = sum(totals) or 1
    header = (
        _field("[node type]", 40)
        + _field("[first]", 9)
        + _field("[avg ms]", 9)
        + _field("[%]", 8)
        + _field("[cdf%]", 8)
        + _field("[mem KB]", 10)
        + _field("[times called]", 9)
        + "\t[Name]"
    )

    def table(title: str, order: list[int]) -> str:
        lines, cdf = [f"============================== {title} ==============================", header], 0
        for i in order:
            kind, name, samples = rows[i]
            cdf += totals[i]
            lines.append(
                _field(kind, 40)
                + _field(f"{samples[0] / 1000:.3f}", 9)
                + _field(f"{totals[i] / runs / 1000:.3f}", 9)
                + _field(f"{100 * totals[i] / grand:.3f}", 7)
                + "%"
                + _field(f"{100 * cdf / grand:.3f}", 7)
                + "%"
                + _field("0.000", 10)
                + _field("1", 9)
                + "\t"
                + name
            )
        return "\n".join(lines) + "\n\n"

    by_type: dict[str, list[int]] = {}
    for (kind, _, _), total in zip(rows, totals):
        by_type.setdefault(kind, []).append(total // runs)
    type_lines = [
        f"Number of nodes executed: {len(rows)}",
        "============================== Summary by node type ==============================",
        _field("[Node type]", 40)
        + _field("[count]", 9)
        + _field("[avg ms]", 10)
        + _field("[avg %]", 11)
        + _field("[cdf %]", 11)
        + _field("[mem KB]", 10)
        + _field("[times called]", 10),
    ]
    cdf, accumulated = 0.0, sum(sum(v) for v in by_type.values()) or 1
    for kind, per_run in sorted(by_type.items(), key=lambda kv: -sum(kv[1])):
        share = 100 * sum(per_run) / accumulated
        cdf += share
        type_lines.append(
            _field(kind, 40)
            + _field(str(len(per_run)), 9)
            + _field(f"{sum(per_run) / 1000:.3f}", 10)
            + _field(f"{share:.3f}", 10)
            + "%"
            + _field(f"{cdf:.3f}", 10)
            + "%"
            + _field("0.000", 10)
            + _field(str(len(per_run)), 9)
        )
    run_totals = [sum(samples[r] for _, _, samples in rows) for r in range(runs)]
    summary = (
        f"Timings (microseconds): {_stat_line(run_totals, percentiles=False)}\n"
        f"Memory (bytes): count=0\n{len(rows)} nodes observed\n"
    )
    by_time = sorted(range(len(rows)), key=lambda i: -totals[i])
    return (
        table("Run Order", list(range(len(rows))))
        + table("Top by Computation Time", by_time)
        + "\n".join(type_lines)
        + "\n\n"
        + summary
        + "\n"
    )


def _centred(title: str, width: int) -> str:
    label = f" {title} "
    left = max(0, width - len(label)) // 2
    return "=" * left + label + "=" * max(0, width - len(label) - left)


def _litert_profile(rows: list[tuple[str, str, list[int]]]) -> str:
    """LiteRtProfileSummarizer::GetOutputString (litert/runtime/profiler_summarizer.cc) for nodes given as (type,
    name, microseconds of each run since start-up), in run order: printf-padded columns, [avg ms] per call and
    [times called] over all runs."""
    totals = [sum(samples) for _, _, samples in rows]
    grand = sum(totals) or 1
    starts = list(itertools.accumulate([0] + [samples[0] for _, _, samples in rows[:-1]]))
    header = (
        f"{'[node type]':>60} {'[start]':>10} {'[first]':>10} {'[avg ms]':>10} {'[%]':>10} {'[cdf%]':>10} "
        f"{'[mem KB]':>10} {'[times called]':>14}   [Name]"
    )

    def table(title: str, order: list[int]) -> str:
        lines, cdf = [_centred(title, 150), header], 0
        for i in order:
            kind, name, samples = rows[i]
            cdf += totals[i]
            lines.append(
                f"{kind:>60} {starts[i] / 1e3:10.3f} {samples[0] / 1e3:10.3f} "
                f"{totals[i] / len(samples) / 1e3:10.3f} {100 * totals[i] / grand:9.3f}% "
                f"{100 * cdf / grand:9.3f}% {0:10.3f} {len(samples):14d}   {name}"
            )
        return "\n".join(lines) + "\n"

    by_type: dict[str, list[int]] = {}
    for kind, _, samples in rows:
        by_type.setdefault(kind, []).extend(samples)
    type_lines, cdf = (
        [
            _centred("Summary by node type", 130),
            f"{'[Node type]':>60} {'[count]':>10} {'[avg ms]':>10} {'[avg %]':>10} {'[cdf %]':>10} "
            f"{'[mem KB]':>10} {'[times called]':>14}",
        ],
        0,
    )
    for kind, samples in sorted(by_type.items(), key=lambda kv: -sum(kv[1])):
        cdf += sum(samples)
        nodes = sum(1 for row in rows if row[0] == kind)
        type_lines.append(
            f"{kind:>60} {nodes:10d} {sum(samples) / len(samples) / 1e3:10.3f} "
            f"{100 * sum(samples) / grand:9.3f}% {100 * cdf / grand:9.3f}% {0:10.3f} {len(samples):14d}"
        )
    delegated = sorted((kind, samples) for kind, samples in by_type.items() if kind.startswith("Delegate/"))
    delegate_lines = [
        f"\n{_centred('Delegate Statistics', 135)}",
        f"{'Op Name':<80} {'Count':>10} {'Avg(us)':>10} {'Min(us)':>10} {'Max(us)':>10} {'Total(us)':>10}",
    ]
    for kind, samples in delegated:
        delegate_lines.append(
            f"{kind:<80} {len(samples):10d} {sum(samples) / len(samples):10.2f} {min(samples):10d} "
            f"{max(samples):10d} {sum(samples):10d}"
        )
    by_time = sorted(range(len(rows)), key=lambda i: -totals[i])
    return (
        table("Run Order", list(range(len(rows))))
        + "\n"
        + table("Top by Computation Time", by_time)
        + f"\nNumber of nodes executed: {len(rows)}\n\n"
        + "\n".join(type_lines)
        + "\n"
        + ("\n".join(delegate_lines) + "\n" if delegated else "")
        + f"\nTimings (microseconds): count={len(rows)} curr={sum(totals)}\n"
        + f"Memory (bytes): count=0\n{len(rows)} nodes observed\n"
    )

"""The ADB connection to a phone, through the adb-shell library (no adb server or platform-tools needed).

Keys are the stock client's: `~/.android/adbkey` (PKCS#8 PEM private key) and `adbkey.pub` (Android's public key
format), so a phone that already trusts this computer's `adb` trusts this package too, and the other way round.

Every failure reaches the caller as one `DeviceError` whose message is one line saying what to do. Errors that a
reconnect may cure (a dropped cable or Wi-Fi link, a timeout) are marked `transient`.
"""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

from adb_shell import exceptions as adb_errors
from adb_shell.adb_device import AdbDevice
from adb_shell.auth.keygen import keygen, write_public_keyfile
from adb_shell.auth.sign_pythonrsa import PythonRSASigner
from adb_shell.transport.tcp_transport import TcpTransport

DEFAULT_KEY = Path.home() / ".android" / "adbkey"
_FILE_MODE, _EXEC_MODE = 0o100644, 0o100755


class DeviceError(RuntimeError):
    """A one-line, actionable message about the phone or the link to it. `transient`: reconnecting may help."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def load_signer(key_path: Path | None = None) -> PythonRSASigner:
    """The RSA key this computer signs ADB tokens with, created like `adb keygen` if absent (private key mode
    0600, public key beside it as KEY.pub)."""
    path = Path(key_path or DEFAULT_KEY).expanduser()
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        old_umask = os.umask(0o077)  # never let the private key exist world-readable, even for a moment
        try:
            keygen(str(path))
        finally:
            os.umask(old_umask)
    if not Path(f"{path}.pub").exists():
        write_public_keyfile(str(path), f"{path}.pub")
    path.chmod(0o600)
    try:
        return PythonRSASigner.FromRSAKeyPath(str(path))
    except ValueError as error:
        raise DeviceError(f"{path} is not an ADB private key ({error}): move it away and a new one is made") from None


class _TcpTransport(TcpTransport):
    """adb-shell's TCP transport with three fixes that matter on real links: Nagle's algorithm is off, as in adb
    itself (a packet header and its payload go out as two writes, and the second waited for the phone's delayed
    ACK: about 40 ms per command); a peer that hangs up is reported at once (the stock transport returns b''
    forever and the reader spins until its timeout); and writes are complete (the stock one ignores partial sends
    on its non-blocking socket, which corrupts large pushes)."""

    def connect(self, transport_timeout_s: float | None) -> None:
        super().connect(transport_timeout_s)
        self._connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
        data = super().bulk_read(numbytes, transport_timeout_s)
        if not data:
            raise ConnectionResetError("the phone closed the connection")
        return data

    def bulk_write(self, data: bytes, transport_timeout_s: float | None) -> int:
        view = memoryview(data)
        while view:
            _, writable, _ = select.select([], [self._connection], [], transport_timeout_s)
            if not writable:
                raise adb_errors.TcpTimeoutException(f"sending to {self._host}:{self._port} timed out")
            view = view[self._connection.send(view) :]
        return len(data)


def _split_tcp(serial: str) -> tuple[str, int] | None:
    host, _, port = serial.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


class Device:
    """A connected phone. `serial` is `HOST:PORT` (adb over TCP/Wi-Fi) or a USB serial number."""

    def __init__(self, serial: str, signer: PythonRSASigner, *, timeout_s: float = 10.0, auth_timeout_s: float = 30.0):
        self.serial, self.signer = serial, signer
        self.timeout_s, self.auth_timeout_s = timeout_s, auth_timeout_s
        self._adb: AdbDevice | None = None

    def open(self) -> Device:
        prompted = False

        def on_prompt(_device: object) -> None:
            nonlocal prompted
            prompted = True

        self.close()
        try:
            with self._errors("connecting"):
                self._adb = self._transport_device()
                self._adb.connect(
                    rsa_keys=[self.signer],
                    transport_timeout_s=self.timeout_s,
                    auth_timeout_s=self.auth_timeout_s,
                    read_timeout_s=self.timeout_s,
                    auth_callback=on_prompt,
                )
        except DeviceError:
            if prompted:  # the phone did not know our key and showed its prompt; nobody accepted in time
                raise DeviceError(
                    f"{self.serial} has not authorised this computer's ADB key: unlock the phone, "
                    f"tap 'Allow' on the 'Allow USB debugging?' prompt (tick 'Always allow') and "
                    f"retry"
                ) from None
            raise
        return self

    def reconnect(self) -> None:
        self.open()

    def close(self) -> None:
        if self._adb is not None:
            self._adb.close()
            self._adb = None

    def shell(self, command: str, timeout_s: float | None = None) -> str:
        """Output (stdout and stderr together, as the legacy shell service merges them) of `sh -c command`."""
        timeout = timeout_s or self.timeout_s
        with self._errors(f"running '{command[:60]}'"):
            return self._connected().shell(
                command, transport_timeout_s=timeout, read_timeout_s=timeout, timeout_s=timeout
            )

    def push(self, data: bytes, remote: str, executable: bool = False) -> None:
        with self._errors(f"pushing {remote}"):
            self._connected().push(
                BytesIO(data),
                remote,
                st_mode=_EXEC_MODE if executable else _FILE_MODE,
                transport_timeout_s=self.timeout_s,
                read_timeout_s=self.timeout_s,
            )

    def pull(self, remote: str) -> bytes:
        buffer = BytesIO()
        with self._errors(f"pulling {remote}"):
            self._connected().pull(remote, buffer, transport_timeout_s=self.timeout_s, read_timeout_s=self.timeout_s)
        return buffer.getvalue()

    def stat(self, remote: str) -> tuple[int, int, int]:
        """(mode, size, mtime) of a device file; all zero when it does not exist."""
        with self._errors(f"checking {remote}"):
            return self._connected().stat(remote, transport_timeout_s=self.timeout_s, read_timeout_s=self.timeout_s)

    def _connected(self) -> AdbDevice:
        if self._adb is None or not self._adb.available:
            raise DeviceError(f"not connected to {self.serial}: the connection was closed", transient=True)
        return self._adb

    def _transport_device(self) -> AdbDevice:
        tcp = _split_tcp(self.serial)
        if tcp is not None:
            return AdbDevice(_TcpTransport(*tcp), default_transport_timeout_s=self.timeout_s)
        from adb_shell.adb_device import AdbDeviceUsb  # needs libusb; only USB users pay for it

        return AdbDeviceUsb(serial=self.serial, default_transport_timeout_s=self.timeout_s)

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """adb-shell's and the socket layer's exceptions, turned into one-line DeviceErrors."""
        try:
            yield
        except DeviceError:
            raise
        except adb_errors.UsbDeviceNotFoundError:
            raise DeviceError(
                f"no USB device with serial {self.serial}: check the cable and that USB debugging is "
                f"on; a running adb server holds the phone, stop it with `adb kill-server`"
            ) from None
        except (adb_errors.PushFailedError, adb_errors.AdbCommandFailureException) as error:
            reason = (
                bytes(error.args[0]).decode(errors="replace")
                if isinstance(error.args[0], (bytes, bytearray))
                else str(error)
            )
            hint = ": free some storage on the phone" if "No space left" in reason else ""
            raise DeviceError(f"{doing} failed on {self.serial}: the phone says '{reason}'{hint}") from None
        except (ConnectionRefusedError, socket.gaierror) as error:
            raise DeviceError(
                f"cannot reach {self.serial} ({error.strerror or error}): check the address, that the "
                f"phone is on this network and that `adb tcpip 5555` was run on it",
                transient=True,
            ) from None
        except (TimeoutError, adb_errors.TcpTimeoutException, adb_errors.AdbTimeoutError):
            self.close()
            raise DeviceError(
                f"{self.serial} did not answer in time while {doing}: check that the phone is awake and "
                f"the cable or Wi-Fi link is good",
                transient=True,
            ) from None
        except (
            OSError,
            adb_errors.UsbReadFailedError,
            adb_errors.UsbWriteFailedError,
            adb_errors.InvalidChecksumError,
            adb_errors.InvalidCommandError,
            adb_errors.InvalidResponseError,
            adb_errors.AdbConnectionError,
        ) as error:
            self.close()
            detail = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DeviceError(
                f"lost the connection to {self.serial} while {doing} ({detail}): check the cable or "
                f"Wi-Fi and that the phone stays awake",
                transient=True,
            ) from None


def connect(
    serial: str, *, key_path: Path | None = None, timeout_s: float = 10.0, auth_timeout_s: float = 30.0
) -> Device:
    """Connect to the phone `serial` (HOST:PORT over TCP, else a USB serial), signing with `key_path`
    (default ~/.android/adbkey, created if absent). `auth_timeout_s` is how long to wait for the user to accept
    this computer's key on the phone."""
    return Device(serial, load_signer(key_path), timeout_s=timeout_s, auth_timeout_s=auth_timeout_s).open()


def attached_usb_serials() -> list[str]:
    """Serial numbers of the phones on USB that offer an ADB interface; empty without libusb or USB access."""
    try:
        import usb1
        from adb_shell.transport.usb_transport import UsbTransport
    except (ImportError, OSError):
        return []
    try:
        return [transport.serial_number for transport in UsbTransport.find_all_adb_devices()]
    except usb1.USBError:  # no permission on /dev/bus/usb (a udev rule is missing): nothing is visible
        return []


def choose_serial(serials_given: Sequence[str], env_serial: str | None, attached: Sequence[str]) -> str:
    """Which phone to use: the one serial given (--serial), else $ANDROID_SERIAL, else the only attached one."""
    if len(serials_given) > 1:
        raise DeviceError(f"{len(serials_given)} serials given ({', '.join(serials_given)}): pass one --serial")
    if serials_given:
        return serials_given[0]
    if env_serial:
        return env_serial
    if len(attached) == 1:
        return attached[0]
    if not attached:
        raise DeviceError(
            "no Android device found: plug in a phone with USB debugging on (and allow this computer "
            "on it), or pass --serial HOST:PORT for one on adb over Wi-Fi"
        )
    raise DeviceError(
        f"{len(attached)} devices attached ({', '.join(attached)}) and none chosen: pass --serial "
        f"SERIAL or set ANDROID_SERIAL"
    )

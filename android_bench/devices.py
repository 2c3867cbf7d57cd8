"""Device profiles: how to benchmark a given phone model fairly.

A profile pins the benchmark to the big cores (a `taskset` mask), sets the thread count, and says how hot the phone
may be before a measurement (a hot phone throttles and its timings drift). Shipped profiles live in
`android_bench/devices/*.toml`; a phone without one gets a profile derived from its CPU frequencies.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .adb import DeviceError

PROFILE_DIR = Path(__file__).with_name("devices")
# For phones without a shipped profile: warm enough not to wait forever on a phone that idles warm, cool enough
# that the big cores are not throttled.
DERIVED_MAX_TEMP_C, DERIVED_MAX_WAIT_S = 45.0, 180.0


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    models: tuple[str, ...]  # ro.product.model values the profile is picked for
    abi: str  # ro.product.cpu.abi, e.g. arm64-v8a
    big_cores: str  # taskset affinity mask in hex, e.g. "c0" for cpu6 and cpu7
    threads: int
    max_temp_c: float
    max_wait_s: float

    @property
    def big_core_count(self) -> int:
        return bin(int(self.big_cores, 16)).count("1")


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A shipped profile by name (`pixel`), or a profile file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILE_DIR / f"{name_or_path}.toml"
        if not path.exists():
            names = ", ".join(p.name for p in builtin_profiles())
            raise DeviceError(f"no device profile '{name_or_path}': choose one of {names} or pass a .toml file")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise DeviceError(f"cannot read device profile {path}: {error}") from None
    try:
        cooldown = data["cooldown"]
        profile = DeviceProfile(
            name=data["name"],
            description=data["description"],
            models=tuple(data["models"]),
            abi=data["abi"],
            big_cores=data["big_cores"],
            threads=int(data["threads"]),
            max_temp_c=float(cooldown["max_temp_c"]),
            max_wait_s=float(cooldown["max_wait_s"]),
        )
    except KeyError as error:
        raise DeviceError(f"device profile {path} lacks {error}: see android_bench/devices/pixel.toml") from None
    _check(profile, path)
    return profile


def _check(profile: DeviceProfile, source: Path) -> None:
    if not re.fullmatch(r"[0-9a-fA-F]+", profile.big_cores) or int(profile.big_cores, 16) == 0:
        raise DeviceError(
            f"{source}: big_cores must be a non-zero hex taskset mask like \"c0\", not '{profile.big_cores}'"
        )
    if not 1 <= profile.threads <= profile.big_core_count:
        raise DeviceError(
            f"{source}: threads must be between 1 and the {profile.big_core_count} cores of big_cores "
            f"(more threads than cores makes them share cores and the timings noisy)"
        )


def builtin_profiles() -> list[DeviceProfile]:
    return [load_profile(path) for path in sorted(PROFILE_DIR.glob("*.toml"))]


def profile_for_model(model: str) -> DeviceProfile | None:
    """The shipped profile for a phone's ro.product.model, if there is one."""
    return next((p for p in builtin_profiles() if model in p.models), None)


def derive_profile(
    cpuinfo_text: str, cpufreq_max_by_cpu: Mapping[int, int], *, abi: str, model: str = "unknown phone"
) -> DeviceProfile:
    """A profile for a phone without a shipped one. Big cores are those with the highest maximum frequency
    (cpuinfo_max_freq); cores missing from /proc/cpuinfo are offline and left out. Without frequencies (unreadable
    cpufreq) every core counts as big: no pinning is better than pinning to the little cores."""
    present = [int(cpu) for cpu in re.findall(r"^processor\s*:\s*(\d+)", cpuinfo_text, re.MULTILINE)]
    if not present:
        raise DeviceError(
            "cannot find the CPU list in the phone's /proc/cpuinfo: write a device profile by hand "
            "(see android_bench/devices/pixel.toml)"
        )
    freqs = {cpu: khz for cpu, khz in cpufreq_max_by_cpu.items() if cpu in present}
    big = [cpu for cpu in present if freqs.get(cpu) == max(freqs.values())] if freqs else present
    return DeviceProfile(
        name="derived",
        description=f"{model}, derived: big cores {','.join(map(str, big))}",
        models=(model,),
        abi=abi,
        big_cores=f"{sum(1 << cpu for cpu in big):x}",
        threads=len(big),
        max_temp_c=DERIVED_MAX_TEMP_C,
        max_wait_s=DERIVED_MAX_WAIT_S,
    )

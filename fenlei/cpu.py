"""What this CPU can do, read once from ``/proc/cpuinfo``: the one place fenlei looks (training precision, the
INT8 saturation warning, every benchmark's machine record).

Figures here depend on the CPU (bf16 is emulated without ``avx512_bf16``/``amx_bf16``; u8s8 INT8 saturates
without VNNI), so every result records :func:`cpu_record`.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

CPUINFO = Path("/proc/cpuinfo")
# The flags that decide fenlei's CPU speed and numerics, in the order results show them.
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


@dataclass(frozen=True)
class CpuInfo:
    model: str  # "model name" of the first processor, or platform.processor() where unknown
    flags: frozenset[str]  # empty where unknown

    @property
    def known(self) -> bool:
        return bool(self.flags)

    def has(self, *names: str) -> Optional[bool]:
        """Whether any of ``names`` is a flag of this CPU; None where the flags are unknown."""
        return bool(self.flags & set(names)) if self.flags else None

    @property
    def native_bf16(self) -> Optional[bool]:
        return self.has("avx512_bf16", "amx_bf16")

    @property
    def vnni(self) -> Optional[bool]:
        """A VNNI-class INT8 dot product (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
        return self.has("avx512_vnni", "avx_vnni", "amx_int8")


def read_cpu(cpuinfo: Path = CPUINFO) -> CpuInfo:
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return CpuInfo(platform.processor() or platform.machine(), frozenset())
    lines = text.splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    return CpuInfo(model or platform.processor() or platform.machine(), frozenset(flags))


def cpu_record(cpuinfo: Path = CPUINFO) -> dict[str, Any]:
    """What a results file records about the machine: model, core count and the relevant flags present."""
    import os

    cpu = read_cpu(cpuinfo)
    return {"model": cpu.model, "cores": os.cpu_count(), "flags": [f for f in RELEVANT_FLAGS if f in cpu.flags]}

"""The host CPU: its model and the instruction-set flags that decide the fast paths (XLA, bf16).

Pure Python (no TensorFlow). Read once per process from `lscpu`, else `/proc/cpuinfo`; a host
where neither answers has no flags (every fast-path decision then takes its safe default).
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess


def lscpu() -> dict[str, str]:
    """`lscpu` as {field: value} ({} where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False,
                             env=dict(os.environ, LC_ALL="C")).stdout
    except OSError:
        return {}
    fields = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


@functools.cache
def cpu_model_and_flags() -> tuple[str, frozenset[str]]:
    """(CPU model name, its feature flags as lscpu/cpuinfo spell them, e.g. "avx512_bf16")."""
    fields = lscpu()
    flags = set(fields.get("Flags", "").split())
    model = fields.get("Model name") or platform.processor() or "unknown"
    if not flags:  # no lscpu: /proc/cpuinfo
        try:
            with open("/proc/cpuinfo") as fh:
                for line in fh:
                    if line.startswith("flags") and not flags:
                        flags = set(line.split(":", 1)[1].split())
                    elif line.startswith("model name") and model in ("unknown", "", "x86_64"):
                        model = line.split(":", 1)[1].strip()
        except OSError:
            pass
    return model, frozenset(flags)


def cpu_flags() -> frozenset[str]:
    return cpu_model_and_flags()[1]


def has_avx512() -> bool:
    """AVX-512 (avx512f): TensorFlow's oneDNN kernels are then faster than XLA's on CPU."""
    return "avx512f" in cpu_flags()


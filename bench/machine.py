"""What every bench prints about the machine it ran on, and how busy other processes kept it."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
import transformers


def busy_cpu_seconds() -> float | None:
    """CPU seconds spent by everything on the machine since boot (Linux), to see who else used the cores."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def machine(device: str, dtype: torch.dtype) -> str:
    cpu = platform.processor() or platform.machine()
    where = torch.cuda.get_device_name() if device.startswith("cuda") else "no GPU"
    versions = (
        f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"torch threads: {torch.get_num_threads()}"
    )
    return f"{os.cpu_count()} cores ({cpu}), {where}, {versions}; {device} {dtype}"

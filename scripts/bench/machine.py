"""Describe the machine a benchmark ran on (printed with every benchmark's figures)."""

from __future__ import annotations

import os
import platform


def describe() -> str:
    model = "unknown cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024 // 1024
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({model}), {mem} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")

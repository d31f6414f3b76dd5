"""Where tensors run: device choice and mixed precision, in one place."""
from __future__ import annotations

import contextlib
import functools

import torch


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX512-BF16, where bf16 matmuls beat fp32 by a wide margin."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_context(device: torch.device | str = "cpu", enabled: bool | None = None):
    """bf16 autocast where the hardware does bf16 fast (CUDA, AMX CPUs); a no-op elsewhere."""
    dev = torch.device(device).type
    if enabled is None:
        enabled = dev == "cuda" or (dev == "cpu" and cpu_has_fast_bf16())
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(dev, dtype=torch.bfloat16)


def exit_with_parent(poll_s: float = 0.5) -> None:
    """In a worker process: exit as soon as the process that started it is gone (killed with -9,
    say), instead of living on as an orphan. A daemon thread watches the parent pid."""
    import os
    import threading
    import time

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()

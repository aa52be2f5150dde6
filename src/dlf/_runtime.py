"""Process-level settings shared by training, evaluation and scoring: autocast and glibc's malloc tuning."""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform

import torch

def autocast(device: torch.device, precision: str):
    """The autocast context of `precision` on `device` (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


_ALLOCATOR_TUNED = False


def malloc_library() -> str:
    """"tcmalloc" or "jemalloc" when one is loaded into this process (LD_PRELOAD), else "default"."""
    try:
        with open("/proc/self/maps") as fh:
            maps = fh.read()
    except OSError:
        return "default"
    return next((name for name in ("tcmalloc", "jemalloc") if f"lib{name}" in maps), "default")


def reuse_freed_memory() -> None:
    """Have glibc's malloc keep freed memory for reuse (process-wide; once; DLF_MALLOC_TUNING=0 disables).

    Every training step allocates and frees the same large activation tensors (B x N x d: ~100 MB at batch 4,096).
    With glibc's defaults each is a fresh mmap whose pages fault in (and are zeroed by the kernel) on first touch, and
    is unmapped again when freed: measured ~1.5x slower steps on 2 cores. M_MMAP_MAX=0 serves large blocks from the
    heap, M_TRIM_THRESHOLD=1 GiB keeps freed heap memory mapped, so later steps reuse pages that are already there.
    The price is fragmentation: the heap's free holes add 1-2 GB to the peak at batch 10,000. TCMalloc (LD_PRELOAD,
    docs/training.md) reuses freed pages without that price; with it (or jemalloc) loaded this does nothing.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED or os.environ.get("DLF_MALLOC_TUNING", "1") == "0":
        return
    _ALLOCATOR_TUNED = True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or malloc_library() != "default":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
        libc.mallopt(m_mmap_max, 0)
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):
        pass

"""Process-level settings shared by training, evaluation and scoring: autocast, the memory allocator (the CLI's
restart on TCMalloc when it is installed, else glibc's malloc tuned to keep freed memory), SIGTERM handling, and
stopping a torchrun rank whose torchrun is gone."""
from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import glob
import os
import platform
import signal
import sys
import threading
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch


def autocast(device: torch.device, precision: str):
    """The autocast context of `precision` on `device` (fp32: none)."""
    import torch  # (here: the CLI imports this module before it may restart the process, so keep that cheap)

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[list[int]]:
    """Within: SIGTERM (`kill`, `timeout`, a job scheduler) raises KeyboardInterrupt where it arrives, so that a
    command unwinds and cleans up as on Ctrl-C. Yields the list of SIGTERMs received: exit status 143 when it is
    not empty, else 130. The previous handler comes back after (a test or notebook that ran the command keeps its
    own)."""
    received: list[int] = []

    def interrupt(signum, _frame):
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def interrupt_when_orphaned(poll_s: float = 0.5, grace_s: float = 10) -> Iterator[list[int]]:
    """Within: once this process's parent is gone, SIGINT goes to the main thread, so that the command unwinds and
    cleans up as on Ctrl-C, and the process ends `grace_s` later if it has not. For torchrun's ranks: torchrun starts
    them in sessions of their own, so `kill -9` of the launcher's process group ended torchrun alone and they trained
    on, orphaned. A thread polling os.getppid() (it changes when the parent dies) rather than
    prctl(PR_SET_PDEATHSIG): that signal comes when the *thread* that started the process ends, which need not be
    when torchrun does, and it is Linux-only; a poll is one system call. Yields [] (no SIGTERM is caught here), as
    sigterm_as_interrupt yields its list."""
    parent = os.getppid()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(poll_s):
            if os.getppid() != parent:
                # torchrun kills a rank that has not stopped some time after its SIGINT; with torchrun gone, this timer
                # does (seen: a rank waiting in a collective for a peer that is stopping, the peer deadlocked in
                # gloo's teardown with the GIL held: neither ran Python code again). The timer needs no GIL
                faulthandler.dump_traceback_later(grace_s, exit=True)
                # (a signal, unlike _thread.interrupt_main, wakes a main thread that sleeps)
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                return

    # Python's own Ctrl-C handler: a process started in the background (`cmd &`) inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=watch, name="dlf-orphan-watch", daemon=True).start()
    try:
        yield []
    finally:
        done.set()
        signal.signal(signal.SIGINT, previous)


def malloc_library() -> str:
    """"tcmalloc" or "jemalloc" when one is loaded into this process (LD_PRELOAD), else "default"."""
    try:
        with open("/proc/self/maps") as fh:
            maps = fh.read()
    except OSError:
        return "default"
    return next((name for name in ("tcmalloc", "jemalloc") if f"lib{name}" in maps), "default")


# where Debian/Ubuntu (libtcmalloc-minimal4, libgoogle-perftools4), Fedora and conda (gperftools) put TCMalloc
_TCMALLOC_GLOBS = ("/usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/*-linux-gnu/libtcmalloc.so.4",
                   "/usr/lib64/libtcmalloc_minimal.so.4", "/usr/lib64/libtcmalloc.so.4",
                   "/usr/local/lib/libtcmalloc_minimal.so*", "/usr/local/lib/libtcmalloc.so*",
                   "{prefix}/lib/libtcmalloc_minimal.so*", "{prefix}/lib/libtcmalloc.so*")


def find_tcmalloc() -> str | None:
    """The path of an installed TCMalloc library, or None."""
    for pattern in _TCMALLOC_GLOBS:
        found = sorted(glob.glob(pattern.format(prefix=sys.prefix)))
        if found:
            return found[0]
    return None


def restart_with_tcmalloc() -> None:
    """Re-run this command with TCMalloc preloaded when it is installed but not loaded (DLF_TCMALLOC=0: never).

    Measured in docs/benchmarks.md ("Peak RSS, run 3"): training as fast as on dlf's tuned glibc malloc with ~1 GB
    less peak RSS at batch 10,000. An allocator cannot be swapped inside a running process, hence the restart
    (exec: same process id, so torchrun and job schedulers see nothing change); Intel's PyTorch launcher does the
    same with its default `--memory-allocator auto`. Call it before anything else happens.
    """
    if (os.environ.get("DLF_TCMALLOC", "1") == "0" or os.environ.get("_DLF_TCMALLOC_TRIED")
            or not sys.platform.startswith("linux") or malloc_library() != "default"):
        return
    lib = find_tcmalloc()
    if lib is None:
        return
    preload = ":".join(p for p in (lib, os.environ.get("LD_PRELOAD")) if p)
    # the marker stops a second restart if the preload fails (the loader then only warns)
    env = dict(os.environ, LD_PRELOAD=preload, _DLF_TCMALLOC_TRIED="1")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


_ALLOCATOR_TUNED = False


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

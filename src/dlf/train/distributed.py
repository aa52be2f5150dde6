"""Process-group plumbing for multi-process training on PyTorch's own engine (torchrun + DDP).

`torchrun --nproc-per-node N -m dlf train ...` sets RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT; `DistContext.from_env` reads them and joins the process group
(gloo on CPU, NCCL on CUDA). A plain `python -m dlf train` is world size 1 and touches no
process group at all.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


class DeviceError(RuntimeError):
    """train.device names a device this machine does not have."""


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of one rank's own random stream (dropout): identical weights come from train.seed first."""
    return seed + 7919 * rank


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False  # this context called init_process_group (and must destroy it)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "auto") -> "DistContext":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dev = resolve_device(device, local_rank)
        if world <= 1:
            return cls(device=dev)
        # processes on this machine: torchrun says; else this rank knows of local_rank + 1 (WORLD_SIZE counts those of
        # every machine of a multi-node run)
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
        if dev.type == "cuda" and local_world > torch.cuda.device_count():
            # NCCL refuses two processes on one device ("Duplicate GPU detected"), a traceback from the first
            # collective; train.device=auto picks CUDA, so `--nproc 2` on a one-GPU machine got there by default
            raise DeviceError(f"{local_world} processes on this machine need one CUDA device each and it has "
                              f"{torch.cuda.device_count()}: use --nproc {torch.cuda.device_count()} or "
                              "train.device=cpu")
        backend = "nccl" if dev.type == "cuda" else "gloo"
        owns = False
        if not dist.is_initialized():
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            # DDP imports torch._dynamo, and importing it while a process group exists leaves ten references to
            # that group in module state, so destroy_process_group cannot free it: gloo's threads then outlive
            # the run and can abort the process at interpreter shutdown (pytorch/pytorch#179291). Imported
            # before the group exists, it keeps none. (Imported `as`: a plain `import torch._dynamo` binds `torch` in
            # this whole function, and torch.cuda.set_device above failed with UnboundLocalError on CUDA.)
            import torch._dynamo as dynamo  # noqa: F401
            dist.init_process_group(backend=backend, rank=rank, world_size=world)
            owns = True
        return cls(rank, world, local_rank, dev, backend, owns)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    # ------------------------------------------------------------ collectives
    def _comm(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device) if self.backend == "nccl" else t.cpu()

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Gather a tensor of possibly different first-dimension length from every rank. The parts are on the
        collectives' device (NCCL: this rank's GPU), so a GPU tensor (mean_sparse, every step) stays on the GPU."""
        if not self.enabled:
            return [t]
        n = self._comm(torch.tensor([t.shape[0]], dtype=torch.int64))
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        dist.all_gather(sizes, n)
        sizes = [int(s.item()) for s in sizes]
        padded = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=n.device)
        padded[: t.shape[0]] = t
        out = [torch.zeros_like(padded) for _ in range(self.world)]
        dist.all_gather(out, padded)
        return [o[:s] for o, s in zip(out, sizes)]

    def gather_rng(self) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Every rank's torch RNG state (dropout) and, on CUDA, the state of its own device's generator: rank 0's
        torch.cuda.get_rng_state_all holds its own process's generators, not the ones the other ranks draw from."""
        cpu = [t[0] for t in self.all_gather(torch.get_rng_state().unsqueeze(0))]
        if self.device.type != "cuda":
            return cpu, None
        return cpu, [t[0] for t in self.all_gather(torch.cuda.get_rng_state(self.device).unsqueeze(0))]

    def all_gather_np(self, a: np.ndarray) -> np.ndarray:
        return torch.cat(self.all_gather(torch.from_numpy(np.ascontiguousarray(a)))).cpu().numpy()

    def broadcast_(self, t: torch.Tensor) -> None:
        """Overwrite `t` in place with rank 0's copy."""
        if self.enabled:
            src = self._comm(t)
            dist.broadcast(src, 0)
            if src is not t:
                t.copy_(src)

    def mean_sparse(self, grad: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a sparse (COO, one sparse dimension) gradient, coalesced.

        Used for the fused embedding tables under train.sparse_embedding: DDP only expects sparse
        gradients from nn.Embedding(sparse=True) modules, so the tables are kept out of DDP and their
        gradients averaged here, as DDP averages the dense ones. All-gather (not all-reduce) works
        on gloo and NCCL alike, and every rank sums the same rows in the same (rank) order.
        """
        grad = grad.coalesce()
        if not self.enabled:
            return grad
        rows = torch.cat(self.all_gather(grad.indices()[0]))
        values = torch.cat(self.all_gather(grad.values())) / self.world
        return torch.sparse_coo_tensor(rows.unsqueeze(0), values, grad.shape).coalesce()

    def all_sum(self, *values: float) -> list[float]:
        """Each value summed over the ranks (float64)."""
        if not self.enabled:
            return list(values)
        t = self._comm(torch.tensor(values, dtype=torch.float64))
        dist.all_reduce(t)
        return t.tolist()

    def all_equal(self, value: float) -> bool:
        """True when `value` is the same on every rank (used to check replicas stay in sync)."""
        if not self.enabled:
            return True
        t = self._comm(torch.tensor([value, -value], dtype=torch.float64))
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t[0].item() == value and -t[1].item() == value)


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("train.device=cuda but no CUDA device is available; use train.device=cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(device)


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """`torchrun --standalone --nproc-per-node N -m dlf <argv without --nproc>` (argv as after `dlf`)."""
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if arg.startswith("--nproc="):
            continue
        rest.append(arg)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "dlf", *rest]


# What a rank says when a collective fails because another rank's process ended (its own error, or a kill): gloo
# raises a plain RuntimeError with a socket error, which printed a 100-line traceback after the real error.
PEER_LOST = "another process of this run stopped (its error, if any, is above); this one stops too"
_PEER_LOST_ERRORS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe")


def peer_lost(exc: BaseException) -> bool:
    """True for the error a collective raises on a rank whose peer process has exited."""
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in _PEER_LOST_ERRORS)


# torchrun's own log lines (glog style, from torch.distributed.elastic), e.g. 'E1129 11:45:11.166000 14855 ...'
_AGENT_LINE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ .*torch/distributed/elastic/")


def _interrupt_with_parent(launcher: int):
    """A preexec_fn: torchrun gets SIGINT when the launcher dies (Linux's PR_SET_PDEATHSIG; the launcher's main thread
    starts it, and the signal comes when that thread ends). `kill -9` of the launcher alone left torchrun and its
    ranks training; torchrun passes the SIGINT on to the ranks, which stop as on Ctrl-C."""
    import ctypes

    def preexec() -> None:
        ctypes.CDLL(None).prctl(1, signal.SIGINT)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != launcher:  # the launcher died before the prctl
            os.kill(os.getpid(), signal.SIGINT)
    return preexec


def run_torchrun(nproc: int, argv: list[str], interrupted: str) -> int:
    """`dlf train --nproc N`: run torchrun and pass its stderr on, with one line for one failure.

    Every rank hits a bad config or bad data alike and printed the same `error:` line; a rank failing alone left
    the others with a peer-lost error; torchrun then added its own log lines, traceback and failure report (on
    Ctrl-C too). Here each `error:` / `interrupted:` line is shown once, nothing after one that says why the run
    stopped (a peer-lost line does not: it is dropped after one), and torchrun's lines (and what follows them) only
    at the end if no rank said why (a rank killed by a signal, say: torchrun's report names the signal).
    SIGTERM to this launcher alone (`kill PID`, `timeout`) is passed on to torchrun, which stops the ranks (they ran
    on, orphaned, beside a later --resume); then only the line `interrupted` is shown. SIGINT is passed on too:
    torchrun runs in a process group of its own, so that a terminal's Ctrl-C and `kill -INT PID` (a job runner,
    Python's send_signal) reach it the same way, once (the second SIGINT of a Ctrl-C to both cut torchrun's
    shutdown short); `kill -INT PID` was ignored and the run trained to its end.
    Returns the exit status: 2 after an error, 130 after Ctrl-C, 143 after SIGTERM, as `dlf train`; else torchrun's.
    """
    from dlf._runtime import sigterm_as_interrupt

    # torchrun prints a banner about OMP_NUM_THREADS unless it is set; it sets 1 itself, so this changes nothing else
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    proc = subprocess.Popen(torchrun_command(nproc, argv), stderr=subprocess.PIPE, text=True, bufsize=1, env=env,
                            errors="replace",  # a library writing Latin-1 must not end the launcher
                            process_group=0,  # SIGINT comes from this process alone: see above
                            preexec_fn=_interrupt_with_parent(os.getpid()) if sys.platform == "linux" else None)
    shown: list[str] = []
    why: list[str] = []  # the shown lines that say why the run stopped
    held: list[str] = []  # from torchrun's first own line on: its shutdown log and report
    stopping = False  # a SIGINT or SIGTERM came
    with sigterm_as_interrupt() as terminated:
        while True:
            try:
                line = proc.stderr.readline()
            except KeyboardInterrupt:  # passed on to torchrun, which passes it on to the ranks: read on while they stop
                proc.send_signal(signal.SIGTERM if terminated else signal.SIGINT)
                stopping = True
                continue
            if not line:
                break
            if terminated:  # torchrun's shutdown log and the ranks' ends say no more than the line below
                continue
            if line.startswith(("error:", "interrupted:")):
                lost = PEER_LOST in line
                if line in shown or (lost and why):
                    continue
                shown.append(line)
                sys.stderr.write(line)
                if not lost:
                    why.append(line)
            elif why or stopping:  # also a rank's traceback of a Ctrl-C in its start, before it could say a line
                continue
            elif held or _AGENT_LINE.match(line):
                held.append(line)
            else:
                sys.stderr.write(line)
        code = proc.wait()  # its stderr has closed: it is ending
    if terminated:
        sys.stderr.write(interrupted + "\n")
        return 143
    if not why and stopping:  # no rank could say so (a Ctrl-C while they started): this, not torchrun's traceback
        sys.stderr.write(interrupted + "\n")
        return 130
    if not why:
        sys.stderr.writelines(held)
        return code
    return 2 if any(line.startswith("error:") for line in why) else 130

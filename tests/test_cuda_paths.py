"""The CUDA-only decisions of training, checked on the CPU with CUDA faked where needed (tests/test_cuda.py runs the
real thing where a GPU exists)."""
import torch
import torch.distributed

from dlf.train.distributed import DistContext


def fake_torchrun(monkeypatch, world: int, gpus: int, rank: int = 0) -> list:
    """Rank `rank` of `world` processes on this machine, which has `gpus` CUDA devices; returns the calls made to
    torch.cuda.set_device and init_process_group (recorded, not run)."""
    for key, value in {"WORLD_SIZE": world, "RANK": rank, "LOCAL_RANK": rank, "LOCAL_WORLD_SIZE": world}.items():
        monkeypatch.setenv(key, str(value))
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", torch.device(d))))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda **kw: calls.append(("init", kw["backend"])))
    return calls


def test_a_process_per_gpu_joins_nccl_on_its_own_device(monkeypatch):
    """`import torch._dynamo` inside from_env made `torch` a local name of the whole function, so its
    torch.cuda.set_device, reached on CUDA only, raised UnboundLocalError: every multi-process CUDA run failed."""
    calls = fake_torchrun(monkeypatch, world=2, gpus=2, rank=1)
    ctx = DistContext.from_env("auto")
    assert ctx.device == torch.device("cuda", 1) and ctx.backend == "nccl"
    assert calls == [("set_device", torch.device("cuda", 1)), ("init", "nccl")]  # the device first, then the group


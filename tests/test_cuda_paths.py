"""The CUDA-only decisions of training, checked on the CPU with CUDA faked where needed (tests/test_cuda.py runs the
real thing where a GPU exists)."""
import sys

import pytest
import torch
import torch.distributed
from rich.console import Console

import dlf
from dlf.config import load_config
from dlf.data.synthetic import generate
from dlf.models import build_model
from dlf.train.distributed import DeviceError, DistContext
from dlf.train.trainer import TrainingError, fit

TINY = ["data.synthetic.rows=3000", "data.synthetic.max_cardinality=50", "model.embedding_dim=4", "model.layers=1",
        "model.rank=2", "model.interaction_tokens=2", "model.implicit_tokens=2", "model.hidden=8",
        "train.batch_size=256", "train.progress=false", "train.epochs=1"]


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


def test_more_processes_than_gpus_is_a_one_line_error(monkeypatch):
    """Two processes on one GPU: NCCL refused it at the first collective ('Duplicate GPU detected'), a traceback; with
    the default train.device=auto, `dlf train --nproc 2` on a one-GPU machine got there."""
    calls = fake_torchrun(monkeypatch, world=2, gpus=1)
    message = "2 processes on this machine need one CUDA device each and it has 1: use --nproc 1 or train.device=cpu"
    with pytest.raises(DeviceError, match=message):
        DistContext.from_env("auto")
    assert calls == []  # refused before any device or process group is set up
    with pytest.raises(TrainingError, match=message):  # dlf.train: the CLI's one line
        dlf.train(load_config(None, ["train.device=cuda"]))


def test_a_launcher_that_does_not_say_how_many_processes_share_the_machine_is_not_refused(monkeypatch):
    """Two machines with one GPU each, started by a launcher that sets no LOCAL_WORLD_SIZE: WORLD_SIZE counts both
    machines' processes, so it must not be read as the processes of this one."""
    calls = fake_torchrun(monkeypatch, world=2, gpus=1)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert DistContext.from_env("auto").device == torch.device("cuda", 0)
    assert calls == [("set_device", torch.device("cuda", 0)), ("init", "nccl")]


def test_a_training_step_reads_one_value_from_the_device(monkeypatch):
    """Each read of a tensor's value (.item(), a tensor as a bool) makes the host wait for a GPU. A step read the loss
    twice, after the forward pass (is it finite?) and again after the optimiser (the running loss; a third time on the
    steps it logs), so the host could not draw the next batch while the GPU ran the backward pass and the update."""
    cfg = load_config(None, TINY + ["train.log_every_steps=1", "train.eval_every_steps=0"])
    data = generate(cfg.data.synthetic)
    reads = []

    def counted(name: str):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            if sys._getframe(1).f_code.co_name == "fit":  # the training loop's own reads
                reads.append(name)
            return original(self, *args, **kwargs)
        return read

    for name in ("item", "__bool__", "__float__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    result = fit(build_model(cfg.model_name, data.feature_map, cfg.model), data.train, data.valid, cfg.train,
                 Console(quiet=True))
    assert result["global_step"] > 1 and reads == ["item"] * result["global_step"]


def test_sparse_gradients_are_averaged_without_copies_to_the_host_under_nccl(monkeypatch):
    """Under NCCL, all_gather copied every rank's part to the host and mean_sparse copied the result back: with
    train.sparse_embedding, each step's embedding gradients went from the GPU to the host and back. Here two ranks
    with equal gradients (NCCL's all_gather faked on the CPU): the mean is that gradient, and nothing calls .cpu()."""
    monkeypatch.setattr(torch.distributed, "all_gather", lambda parts, t: [p.copy_(t) for p in parts])
    to_host = []
    cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: to_host.append(self.shape) or cpu(self, *a, **k))
    with torch.sparse.check_sparse_tensor_invariants():
        grad = torch.sparse_coo_tensor(torch.tensor([[3, 1, 3]]), torch.arange(6.0).view(3, 2), (5, 2))
        mean = DistContext(rank=0, world=2, device=torch.device("cpu"), backend="nccl").mean_sparse(grad)
    assert to_host == []
    torch.testing.assert_close(mean.to_dense(), grad.to_dense())

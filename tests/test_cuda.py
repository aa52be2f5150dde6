"""The CUDA paths of the model, trainer and scoring. Skipped without a CUDA device; benchmarks/gpu_check.sh runs them
on a machine that has one."""
from dataclasses import replace

import pytest
import torch
from rich.console import Console

import dlf
from conftest import random_batch
from dlf.config import load_config
from dlf.models import build_model, get_entry
from dlf.train.checkpoint import load_latest

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TINY = ["data.synthetic.rows=6000", "data.synthetic.max_cardinality=100", "model.embedding_dim=8", "model.layers=2",
        "model.rank=3", "model.interaction_tokens=4", "model.implicit_tokens=4", "model.hidden=32",
        "train.batch_size=256", "train.progress=false"]


@pytest.mark.parametrize("name", ["dlf", "dlf_concat", "wukong", "dcnv2"])
def test_cuda_forward_and_gradients_match_the_cpu(small_feature_map, name):
    overrides = dict(embedding_dim=8, layers=2, rank=3, interaction_tokens=4, implicit_tokens=4, hidden=16) \
        if name.startswith("dlf") else dict(embedding_dim=8)
    cfg = get_entry(name).default_config()
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if hasattr(cfg, k)})
    torch.manual_seed(0)
    cpu = build_model(name, small_feature_map, cfg).train()
    gpu = build_model(name, small_feature_map, cfg).train()
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    batch = random_batch(small_feature_map, 64)
    out_cpu, out_gpu = cpu(batch), gpu(batch.to(torch.device("cuda")))
    out_cpu.sum().backward()
    out_gpu.sum().backward()
    torch.testing.assert_close(out_gpu.detach().cpu(), out_cpu.detach(), rtol=1e-4, atol=1e-4)
    for (pname, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad.cpu(), p.grad, rtol=1e-3, atol=1e-5, msg=pname)


def test_bf16_training_on_cuda_learns_and_its_checkpoint_resumes_on_the_cpu(tmp_path):
    quiet = Console(quiet=True)
    run = tmp_path / "run"
    metrics = dlf.train(load_config(None, TINY + ["train.epochs=1", "train.device=cuda", "train.precision=bf16"]),
                        out=run, console=quiet)
    assert metrics["test"]["auc"] > 0.6 and 0 < metrics["test"]["logloss"] < 0.7
    # the checkpoint holds CUDA tensors' values, not CUDA tensors: the run continues on a machine without a GPU
    resumed = dlf.train(load_config(run / "config.yaml", ["train.epochs=2", "train.device=cpu"]), resume=run,
                        console=quiet)
    assert resumed["epochs_run"] == 2 and resumed["test"]["auc"] > 0.6


SPARSE = {"rowwise_adagrad": ["train.sparse_embedding=true", "train.embedding_optimizer=rowwise_adagrad",
                              "train.embedding_lr=0.05"],
          "sparse_adam": ["train.sparse_embedding=true"]}


@pytest.mark.parametrize("optimizer", list(SPARSE))
def test_sparse_embedding_training_on_cuda_follows_the_cpu(optimizer):
    """Sparse gradients on CUDA (coalesced, clipped, then RowWiseAdagrad or SparseAdam): the same fp32 run, same initial
    weights and batches, ends at the same test metrics on the CPU and on CUDA, up to float rounding."""
    quiet = Console(quiet=True)
    test = {}
    for device in ("cpu", "cuda"):
        cfg = load_config(None, TINY + ["train.epochs=1", f"train.device={device}", *SPARSE[optimizer]])
        test[device] = dlf.train(cfg, console=quiet)["test"]
    for metric in ("auc", "logloss"):
        assert test["cuda"][metric] == pytest.approx(test["cpu"][metric], abs=0.01), (metric, test)


def test_fp16_training_on_cuda_learns_and_resumes_with_its_loss_scale(tmp_path):
    """fp16: autocast with GradScaler (unscaled before clipping), its state in the checkpoint and restored on resume.
    Two epochs: the scaler skips the first steps while it backs off from 2**16 (15 of the 19 steps of an epoch in a
    CPU emulation of this run, which then reached AUC 0.57 after one epoch and 0.69 after two)."""
    quiet = Console(quiet=True)
    run = tmp_path / "run"
    metrics = dlf.train(load_config(None, TINY + ["train.epochs=2", "train.device=cuda", "train.precision=fp16"]),
                        out=run, console=quiet)
    assert metrics["test"]["auc"] > 0.6 and 0 < metrics["test"]["logloss"] < 0.7
    assert 0 < load_latest(run / "checkpoints").state.scaler["scale"] < 2**16
    resumed = dlf.train(load_config(run / "config.yaml", ["train.epochs=3"]), resume=run, console=quiet)
    assert resumed["epochs_run"] == 3 and resumed["test"]["auc"] > 0.6

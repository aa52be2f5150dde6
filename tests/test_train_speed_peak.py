"""benchmarks/train_speed.py's GPU memory peak, checked on the CPU with the CUDA calls faked."""
import torch

from conftest import load_benchmark
from dlf.data.features import Batch

train_speed = load_benchmark("train_speed")


def test_the_gpu_peak_is_the_training_steps_not_the_extra_forward_pass(tmp_path, monkeypatch):
    """The peak was read after the forward pass that measures saved activations, made while the last step's
    gradients still exist: it reported that pass's peak (up to the gradients' size above training's)."""
    folder = tmp_path / "data"
    train_speed.generate_into(folder, rows=600, max_cardinality=50)
    allocated = {"peak": 0}

    def step(*args):  # a training step's peak
        allocated["peak"] = max(allocated["peak"], 3e9)
        return 0.01, 0.01, 0.01, 0.01

    def extra_pass(*args):  # its activations on top of the last step's gradients
        allocated["peak"] = max(allocated["peak"], 4e9)
        return 0.5

    build = train_speed.build_for_job
    monkeypatch.setattr(train_speed, "build_for_job", lambda job, name, fm: build({**job, "device": "cpu"}, name, fm))
    monkeypatch.setattr(train_speed, "timed_step", step)
    monkeypatch.setattr(train_speed, "saved_activations_gb", extra_pass)
    monkeypatch.setattr(Batch, "to", lambda self, device: self)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: allocated["peak"])
    job = {"model": "dlf_concat", "set": {"layers": 1}, "precision": "fp32", "batch_size": 64, "steps": 2, "warmup": 1,
           "eval_rows": 0, "threads": torch.get_num_threads(), "data": str(folder), "loader": "array", "compile": False,
           "embedding_optimizer": "dense", "device": "cuda"}
    result = train_speed.run_worker(job)
    assert result["peak_gpu_gb"] == 3.0 and result["saved_activations_gb"] == 0.5

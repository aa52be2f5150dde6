"""Resume mid-epoch on a processed (memory-mapped, block-shuffled) dataset trains on exactly the rows the
uninterrupted run trained on after that step: same final weights, bit for bit."""
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import dlf
from dlf.data.preprocess import preprocess


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    lines = ["click,user,city,tags,x"]
    for _ in range(800):  # 641 train rows: 10 batches of 64 and one row the trainer drops (too few to train on)
        tags = ";".join(f"t{t}" for t in rng.integers(0, 9, rng.integers(0, 4)))
        lines.append(f"{rng.integers(0, 2)},u{rng.integers(0, 30)},c{rng.integers(0, 5)},{tags},"
                     f"{rng.standard_normal():.3f}")
    (folder / "r.csv").write_text("\n".join(lines) + "\n")
    (folder / "r.yaml").write_text("format: csv\nlabel: click\ngroup: user\ncategorical: [user, city]\n"
                                   "numeric: [x]\nmulti:\n  - {name: tags, separator: ';', max_len: 3}\n"
                                   "defaults: {min_count: 1}\n")
    preprocess("generic", [folder / "r.csv"], folder / "out", schema=folder / "r.yaml")
    return folder / "out"


@pytest.mark.parametrize("resume_at", [3, 12])  # inside epoch 1; inside epoch 2 (after the epoch-1 reshuffle)
def test_resume_mid_epoch_on_processed_data_gives_the_uninterrupted_weights(processed, tmp_path, resume_at):
    cfg = {"model": {"name": "deepfm", "dropout": 0.2}, "data": {"dataset": "processed", "path": str(processed)},
           "train": {"epochs": 2, "batch_size": 64, "checkpoint_every_steps": 3, "keep_checkpoints": 100,
                     "threads": 1, "progress": False, "tensorboard": False}}
    full = tmp_path / "full"
    dlf.train(cfg, out=full)
    run = tmp_path / "run"  # the same run, as if killed right after the checkpoint of step `resume_at`
    shutil.copytree(full, run)
    (run / "model.safetensors").unlink()
    for ckpt in (run / "checkpoints").glob("step-*"):
        if int(ckpt.name[5:14]) > resume_at:
            ckpt.unlink()
    dlf.train(resume=run)
    a, b = load_file(full / "model.safetensors"), load_file(run / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

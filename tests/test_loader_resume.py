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


def _equal(a, b):
    return all((x is None and y is None) or torch.equal(x, y) for x, y in
               ((getattr(a, k), getattr(b, k)) for k in ("categorical", "numeric", "multi", "label", "group")))


@pytest.mark.parametrize("shuffle, drop_last", [(False, False), (True, False), (True, True)])
def test_skipped_batches_are_left_out_unread_and_the_others_are_bit_identical(monkeypatch, shuffle, drop_last):
    """Resume mid-epoch built every batch trained before the checkpoint (reads and gathers of its rows) only to throw
    it away; both loaders now leave the skipped batches out without reading their rows."""
    from dlf.data.dataset import ArrayDataset
    from dlf.data.store import MappedDataset
    from dlf.train.distributed import DistContext
    from dlf.train.trainer import epoch_batches
    rng = np.random.default_rng(0)
    n = 1030  # 10 batches of 100 and one of 30; blocks of 64 rows
    cols = (rng.integers(0, 50, (n, 3)).astype(np.int32), rng.standard_normal((n, 2)).astype(np.float32),
            rng.integers(0, 9, (n, 1, 4)).astype(np.int32), (np.arange(n) % 2).astype(np.float32),
            np.arange(n, dtype=np.int64))
    reads = []
    read = MappedDataset._read
    monkeypatch.setattr(MappedDataset, "_read", lambda self, lo, hi: reads.append(hi - lo) or read(self, lo, hi))
    for data in (MappedDataset(*cols, block_rows=64), ArrayDataset(*cols)):
        full = list(data.batches(100, shuffle=shuffle, seed=3, epoch=2, drop_last=drop_last))
        for skip in (0, 1, 3, 7, len(full) - 1, len(full), len(full) + 1):
            reads.clear()
            rest = list(data.batches(100, shuffle=shuffle, seed=3, epoch=2, drop_last=drop_last, skip=skip))
            assert len(rest) == len(full[skip:]) and all(_equal(a, b) for a, b in zip(full[skip:], rest))
            assert sum(reads) <= max(n - 100 * skip, 0) + 63  # rows not skipped (and one block read in part)
        for dist, sharding in ((DistContext(), "batch"), (DistContext(rank=1, world=2), "batch"),
                               (DistContext(rank=1, world=2), "rows")):
            part = data.shard(1, 2) if sharding == "rows" else data
            every = list(epoch_batches(part, 100, dist, sharding, 5, 1))
            assert all(_equal(a, b) for a, b in zip(every[4:], epoch_batches(part, 100, dist, sharding, 5, 1, 4)))

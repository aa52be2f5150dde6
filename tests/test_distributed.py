"""Multi-process training: `dlf train --nproc 2` (torchrun, DDP over gloo on CPU) follows the
1-process run with the same global batch, gathers validation metrics over all rows, keeps the
replicas in sync, and writes its checkpoints from rank 0 so it can be resumed."""
import json
import subprocess
import sys

import pytest

import dlf
from dlf.train.checkpoint import list_checkpoints, load_checkpoint
from dlf.train.distributed import torchrun_command

# logistic regression has no batch norm, whose per-rank statistics (SyncBatchNorm is CUDA-only in
# torch) would make CPU multi-process runs differ from 1-process ones by more than rounding
ARGS = {"data.synthetic.rows": 3000, "data.synthetic.max_cardinality": 200, "train.epochs": 2,
        "train.batch_size": 256, "train.threads": 1, "train.lr": 0.01, "train.eval_every_steps": 4}


def test_two_process_gloo_run_matches_one_process_run(tmp_path):
    sets = [x for k, v in ARGS.items() for x in ("--set", f"{k}={v}")]
    one = dlf.train(dlf.load_config(None, [f"{k}={v}" for k, v in ARGS.items()] + ["train.progress=false"],
                                    model="lr"))
    out = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "dlf", "train", "--model", "lr", "--nproc", "2", "--out", str(out),
                           "--quiet", *sets], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    two = json.loads((out / "metrics.json").read_text())
    assert two["world_size"] == 2 and two["replicas_in_sync"] is True
    assert len(two["history"]) == len(one["history"]) >= 4  # every-4-steps evaluations plus epoch ends
    for a, b in zip(one["history"], two["history"]):
        assert a["step"] == b["step"]
        assert b["val_auc"] == pytest.approx(a["val_auc"], abs=1e-5)
        assert b["val_logloss"] == pytest.approx(a["val_logloss"], abs=1e-5)
    assert two["test"]["auc"] == pytest.approx(one["test"]["auc"], abs=1e-5)
    # only rank 0 talks: one summary line, one per-evaluation line each, one result table
    assert proc.stdout.count("model lr:") == 1 and proc.stdout.count("(test split)") == 1
    assert proc.stdout.count("val AUC") == len(two["history"])
    ck = load_checkpoint(list_checkpoints(out / "checkpoints")[0])
    assert ck.state.done and set(ck.rng["ranks"]) == {0, 1}  # each rank's RNG is kept for resume


def test_torchrun_command_drops_nproc_and_runs_the_module():
    cmd = torchrun_command(4, ["train", "--nproc", "4", "--quiet", "--nproc=4", "--out", "r"])
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m", "dlf",
                       "train", "--quiet", "--out", "r"]

"""Multi-process training: `dlf train --nproc 2` (torchrun, DDP over gloo on CPU) follows the
1-process run with the same global batch (also with sparse embedding gradients), gathers validation
metrics over all rows, keeps the replicas in sync, and writes its checkpoints from rank 0; a 2-process
run killed mid-epoch resumes to the weights of an uninterrupted one."""
import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

import dlf
from dlf.train.checkpoint import list_checkpoints, load_checkpoint
from dlf.train.distributed import PEER_LOST, torchrun_command
from test_cli import default_sigint
from test_train_resume import TINY, _assert_same_weights, _kill_after_mid_epoch_checkpoint
from test_train_resume import dlf as run_dlf

# logistic regression has no batch norm, whose per-rank statistics (SyncBatchNorm is CUDA-only in
# torch) would make CPU multi-process runs differ from 1-process ones by more than rounding
ARGS = {"data.synthetic.rows": 3000, "data.synthetic.max_cardinality": 200, "train.epochs": 2,
        "train.batch_size": 256, "train.threads": 1, "train.lr": 0.01, "train.eval_every_steps": 4}


# tiny DLF (DDP over the whole model), as keyword overrides
ARGS_DLF = [f"{k}={v}" for k, v in {**ARGS, "model.embedding_dim": 8, "model.layers": 1, "model.rank": 2,
                                      "model.interaction_tokens": 2, "model.implicit_tokens": 2, "model.hidden": 16,
                                      "train.progress": False}.items()]


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse_embedding"])
def test_two_process_gloo_run_matches_one_process_run(tmp_path, sparse):
    # sparse: the table is kept out of DDP and its sparse gradient averaged by DistContext.mean_sparse; the
    # gradient norms rank 0 logs (after averaging) must be those of the 1-process run's full-batch gradients
    args = {**ARGS, "train.sparse_embedding": str(sparse).lower(), "train.grad_norm_every_steps": 1}
    sets = [x for k, v in args.items() for x in ("--set", f"{k}={v}")]
    one = dlf.train(dlf.load_config(None, [f"{k}={v}" for k, v in args.items()] + ["train.progress=false"],
                                    model="lr"), out=tmp_path / "one", console=Console(quiet=True))
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
    norms = [list(csv.DictReader((run / "grad_norms.csv").open())) for run in (tmp_path / "one", out)]
    assert len(norms[0]) == len(norms[1]) > 0
    for a, b in zip(*norms):
        assert (a["step"], a["group"]) == (b["step"], b["group"])
        assert float(b["grad_norm"]) == pytest.approx(float(a["grad_norm"]), rel=1e-4)
    # only rank 0 talks: one summary line, one per-evaluation line each, one result table
    assert proc.stdout.count("model lr:") == 1 and proc.stdout.count("(test split)") == 1
    assert proc.stdout.count("val AUC") == len(two["history"])
    ck = load_checkpoint(list_checkpoints(out / "checkpoints")[0])
    assert ck.state.done and set(ck.rng["ranks"]) == {0, 1}  # each rank's RNG is kept for resume


def _two_ranks(code: str) -> list[subprocess.CompletedProcess]:
    """Run Python `code` as ranks 0 and 1 of a gloo group (the variables torchrun sets, without torchrun's agent: a
    few seconds less)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
             for r in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    return [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(procs, outputs)]


# a run of a second or so on each of two ranks (_two_ranks, _train_code)
QUICK = ["data.synthetic.rows=300", "data.synthetic.max_cardinality=50", "train.epochs=1", "train.batch_size=64",
         "train.progress=false"]


def _train_code(*runs: list[str], model: str = "lr") -> str:
    """Code for _two_ranks: dlf.train on QUICK's data with each list of overrides in turn (one start for all);
    prints each run's test metrics and history as one JSON line."""
    return ("import json\nfrom rich.console import Console\nimport dlf\n"
            f"for overrides in {[QUICK + list(r) for r in runs]!r}:\n"
            f"    cfg = dlf.load_config(None, overrides, model={model!r})\n"
            "    m = dlf.train(cfg, console=Console(quiet=True))\n"
            "    print(json.dumps({'test': m['test'], 'history': m['history']}))\n")


def test_data_without_numeric_fields_trains_on_two_processes():
    """Frappe and Avazu have no numeric field: the embedding's numeric vectors (0 x d) got no gradient, and DDP failed
    every model's second step with 'Expected to have finished reduction in the prior iteration' (dense tables and
    sparse ones, which are kept out of DDP, alike)."""
    ranks = _two_ranks(_train_code(["data.synthetic.numeric=0"],
                                   ["data.synthetic.numeric=0", "train.sparse_embedding=true"]))
    assert [r.returncode for r in ranks] == [0, 0], ranks[0].stderr[-2000:]
    tests = [[json.loads(line)["test"] for line in r.stdout.splitlines()] for r in ranks]
    assert tests[0] == tests[1] and len(tests[0]) == 2  # every rank: the same test metrics


def test_sparse_embedding_l2_on_two_processes_follows_the_one_process_run():
    """train.embedding_l2 under train.sparse_embedding penalised, on each rank, the rows of its own slice of the
    batch: averaged over the ranks, a row looked up by one rank only got half its penalty, and the run drifted from
    the 1-process run (weights 5e-3 apart on Frappe at embedding_l2=1e-5); now the rows of the global batch."""
    overrides = ["train.sparse_embedding=true", "train.embedding_l2=0.05", "train.lr=0.05", "train.epochs=2",
                 "train.embedding_optimizer=rowwise_adagrad"]
    one = dlf.train(dlf.load_config(None, QUICK + overrides, model="lr"), console=Console(quiet=True))["test"]
    ranks = _two_ranks(_train_code(overrides))
    assert [r.returncode for r in ranks] == [0, 0], ranks[0].stderr[-2000:]
    two = json.loads(ranks[0].stdout)["test"]
    assert two["logloss"] == pytest.approx(one["logloss"], rel=1e-5) and two["auc"] == pytest.approx(one["auc"])


def test_the_train_loss_of_a_two_process_run_covers_every_ranks_rows(monkeypatch):
    """The train loss of each evaluation (train_log.csv, metrics.json, TensorBoard) and TensorBoard's train/loss of
    each step were rank 0's mean over its half of the rows: 0.6071 against the 1-process run's 0.6082 on Frappe.
    Now the sum over every rank's rows, in a mid-epoch checkpoint too: rank 0 carries it on after a resume (with any
    process count)."""
    from dlf.train.trainer import RunLogger

    overrides = ["train.epochs=2", "train.eval_every_steps=2", "train.lr=0.05", "train.log_every_steps=1"]
    logged = []  # TensorBoard's train/loss (no run directory here: its writing and its chart take seconds)
    monkeypatch.setattr(RunLogger, "step", lambda self, step, loss, lr: logged.append(loss))
    one = dlf.train(dlf.load_config(None, QUICK + overrides, model="lr"), console=Console(quiet=True))["history"]
    patch = ("from dlf.train.trainer import RunLogger\nlogged = []\n"
             "RunLogger.step = lambda self, step, loss, lr: logged.append(loss)\n")
    ranks = _two_ranks(patch + _train_code(overrides) + "print(json.dumps(logged))\n")
    assert [r.returncode for r in ranks] == [0, 0], ranks[0].stderr[-2000:]
    two, logged_two = (json.loads(line) for line in ranks[0].stdout.splitlines())
    assert [h["step"] for h in two["history"]] == [h["step"] for h in one]
    assert [h["train_loss"] for h in two["history"]] == pytest.approx([h["train_loss"] for h in one], rel=1e-6)
    assert len(logged) == 8 and logged_two == pytest.approx(logged, rel=1e-5)


def test_a_last_batch_of_an_odd_size_on_two_processes_follows_the_one_process_run():
    """241 training rows in batches of 64 end with a batch of 49: rank 0 got 25 rows, rank 1 24, and DDP averaged the
    two means, so each of rank 1's rows counted 25/24 of one of rank 0's (test logloss 7e-4 from the 1-process run's,
    against 1e-7 with an even split); each rank's mean now counts by its share of the global batch."""
    overrides = ["data.synthetic.rows=301", "train.epochs=3", "train.lr=0.1"]
    one = dlf.train(dlf.load_config(None, QUICK + overrides, model="lr"), console=Console(quiet=True))["test"]
    ranks = _two_ranks(_train_code(overrides))
    assert [r.returncode for r in ranks] == [0, 0], ranks[0].stderr[-2000:]
    assert json.loads(ranks[0].stdout)["test"]["logloss"] == pytest.approx(one["logloss"], rel=1e-5)


def test_two_process_test_metrics_are_those_of_the_saved_weights_with_batch_norm():
    """On CPU each rank's batch norm keeps running statistics of its own slice: the test (and validation) metrics
    gathered from the ranks' shards mixed rank 1's statistics with rank 0's, which are the ones saved (DLF on
    Frappe: test logloss 5e-4 from a 1-process evaluation of model.safetensors). Rank 0's now hold on every rank."""
    patch = ("import importlib, json\nfrom dlf.train.distributed import DistContext\n"
             "api = importlib.import_module('dlf.api')\nevaluate = api.evaluate\n"
             "def both(model, data, batch_size, dist, precision):  # and rank 0's model alone, on every row\n"
             "    gathered = evaluate(model, data, batch_size, dist, precision)\n"
             "    if dist.is_main:\n"
             "        print(json.dumps([gathered, evaluate(model, data, batch_size, DistContext(), precision)]))\n"
             "    return gathered\n"
             "api.evaluate = both\n")
    ranks = _two_ranks(patch + _train_code(["model.batch_norm=true", "model.hidden_units=[16]", "train.epochs=2",
                                            "train.lr=0.05"], model="dnn"))
    assert [r.returncode for r in ranks] == [0, 0], ranks[0].stderr[-2000:]
    gathered, alone = json.loads(ranks[0].stdout.splitlines()[0])
    assert gathered == pytest.approx(alone, rel=1e-6)


def test_torchrun_command_drops_nproc_and_runs_the_module():
    cmd = torchrun_command(4, ["train", "--nproc", "4", "--quiet", "--nproc=4", "--out", "r"])
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m", "dlf",
                       "train", "--quiet", "--out", "r"]


def test_two_process_run_killed_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    args = [*TINY, "--nproc", "2"]  # tiny DLF: per-rank dropout streams, checkpoints every 3 steps
    full = tmp_path / "full"
    proc = run_dlf("train", "--out", str(full), *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = tmp_path / "run"
    assert _kill_after_mid_epoch_checkpoint(run, args) == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run / "model.safetensors").exists()
    proc = run_dlf("train", "--resume", str(run), "--nproc", "2", "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("resuming from step-") == 1  # rank 0 talks
    _assert_same_weights(run, full)
    assert json.loads((run / "metrics.json").read_text())["replicas_in_sync"] is True


def test_process_group_threads_are_gone_when_dlf_train_returns(tmp_path):
    # gloo's worker threads must stop in destroy_process_group: left running, they can abort a finished process at
    # interpreter shutdown (pytorch/pytorch#179291). DDP imports torch._dynamo, which keeps references to a process
    # group that exists at its import; DistContext imports it first (remove that import and this fails).
    script = tmp_path / "worker.py"
    script.write_text(
        "import os\nfrom rich.console import Console\nimport dlf\nfrom dlf.config import load_config\n"
        f"cfg = load_config(None, {ARGS_DLF!r})\n"
        "dlf.train(cfg, console=Console(quiet=True))\n"
        "names = sorted(open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task'))\n"
        "os.write(1, f'threads of rank {os.environ[\"RANK\"]}: {names}\\n'.encode())\n")  # one write per rank
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = sorted(line for line in proc.stdout.splitlines() if line.startswith("threads of rank"))
    assert len(lines) == 2, proc.stdout
    assert not [line for line in lines if "gloo" in line], lines  # e.g. gloo_tcp_loop, pt_gloo_runloop


def test_an_out_that_is_a_file_is_one_line_before_and_under_torchrun(tmp_path):
    """Checked on rank 0 only, the other rank went on and died in its first collective with a traceback (and
    torchrun's failure report); `--nproc` now checks before starting processes, torchrun direct on every rank."""
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    args = ["train", "--out", str(afile), *TINY]
    proc = run_dlf(*args, "--nproc", "2")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: run directory {afile} (--out) is a file, not a directory; choose another --out"], proc.stderr
    proc = subprocess.run(torchrun_command(2, args), capture_output=True, text=True, timeout=300)
    # (torchrun's own report of a failed child has a traceback of torchrun; no rank prints one)
    assert proc.returncode != 0 and "[rank1]" not in proc.stderr and proc.stderr.count("is a file") == 2, proc.stderr


def _nproc2_lr_with_hook(tmp_path, sitecustomize: str, *args: str, timeout: float = 300,
                         **overrides) -> subprocess.CompletedProcess:
    """`dlf train --model lr --nproc 2 ARGS` with `sitecustomize` imported by every rank (a fault injected into one)."""
    (tmp_path / "sitecustomize.py").write_text(sitecustomize)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    sets = [x for k, v in {**ARGS, "train.epochs": 1, **overrides}.items() for x in ("--set", f"{k}={v}")]
    return subprocess.run([sys.executable, "-m", "dlf", "train", "--model", "lr", "--nproc", "2", "--quiet", *sets,
                           *args], capture_output=True, text=True, timeout=timeout, env=env)


def _at_rank1_step_3(statement: str) -> str:
    """sitecustomize code: on rank 1, `statement` runs (with `loss` bound) at the 3rd training loss."""
    return ("import os, signal\n"
            "if os.environ.get('RANK') == '1':\n"
            "    import torch.nn.functional as F\n"
            "    bce, calls = F.binary_cross_entropy_with_logits, []\n"
            "    def hooked(*a, **k):\n"
            "        loss = bce(*a, **k)\n"
            "        calls.append(1)\n"
            "        if len(calls) == 3:\n"
            f"            {statement}\n"
            "        return loss\n"
            "    F.binary_cross_entropy_with_logits = hooked\n")


def test_one_rank_failing_alone_ends_every_rank_with_one_line(tmp_path):
    """Rank 1's loss turns NaN at its 3rd step (injected through sitecustomize): rank 0, in DDP's all-reduce, got a
    gloo 'Connection reset by peer' and printed a 100-line traceback, then torchrun its own report. Now the
    failing rank's error is the one line on stderr (rank 0 says 'another process ... stopped', which `--nproc`
    drops after the real error), and no rank hangs."""
    proc = _nproc2_lr_with_hook(tmp_path, _at_rank1_step_3("loss = loss * float('nan')"))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: training loss became nan at epoch 1, step 3; lower train.lr (now 0.01) or check inputs"], proc.stderr


def _rank1_raises_holding_a_blocker(tmp_path, run: Path, exception: str, before: str = "") -> \
        subprocess.CompletedProcess:
    """`dlf train --nproc 2 --out RUN` where rank 1 runs `before`, then raises `exception` at its 3rd step with an
    object in its traceback whose destructor blocks with the GIL held (as gloo's did in the interpreter's teardown);
    the test gives up after 90 s and kills what is left."""
    hook = ("import ctypes\n"
            "class Blocker:\n"
            "    def __del__(self):\n"
            "        ctypes.PyDLL(None).sleep(600)  # PyDLL: the GIL stays held\n"
            + _at_rank1_step_3(f"{before}blocker = Blocker(); raise {exception}"))
    try:
        return _nproc2_lr_with_hook(tmp_path, hook, "--out", str(run), timeout=90)
    finally:
        for pid in _processes_of(run):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("stderr_gone", [False, True], ids=["ctrl-c", "launcher-killed"])
def test_an_interrupted_rank_ends_without_the_interpreters_teardown(tmp_path, stderr_gone):
    """Ctrl-C of `dlf train --nproc 2`, or kill -9 of its launcher: in about 1 of 6 tries a rank ended 30 s late,
    killed by torchrun. The interrupt's traceback kept DDP's Reducer, and with it the gloo process group, alive until
    the interpreter's teardown freed them with the GIL held: ProcessGroupGloo's destructor then waited for a worker
    thread that waited for the GIL. Here rank 1 is interrupted with an object in its traceback whose destructor blocks
    with the GIL held, as that one did; the run ended only when the test gave up (rank 0 waits in a collective for
    rank 1). With the launcher killed, the rank's 'interrupted' line met a closed pipe and it ended the same way."""
    run = tmp_path / "run"
    # a pipe nobody reads, as the launcher's after kill -9: writing to it raises BrokenPipeError
    gone = "r, w = os.pipe(); os.close(r); os.dup2(w, 2); " if stderr_gone else ""
    proc = _rank1_raises_holding_a_blocker(tmp_path, run, "KeyboardInterrupt", before=gone)
    if stderr_gone:  # rank 0 then says why it stopped, and torchrun reports rank 1's exit status
        assert proc.returncode not in (0, 130) and PEER_LOST in proc.stderr, proc.stderr
    else:
        assert proc.returncode == 130 and proc.stderr.splitlines() == [
            f"interrupted: continue with dlf train --resume {run}"], proc.stderr


@pytest.mark.parametrize("error, expected", [
    ("__import__('dlf.train.trainer', fromlist=['_']).TrainingError('injected')", "error: injected"),
    ("ValueError('injected')", "ValueError: injected"),
], ids=["training-error", "unexpected-error"])
def test_a_failing_rank_ends_without_the_interpreters_teardown(tmp_path, error, expected):
    """As above, for a rank stopped by an error: its traceback kept the gloo process group alive until the
    interpreter's teardown, where the same deadlock could hold the rank (and its peer) until torchrun's timeout.
    The error is still shown once, and a bug's traceback in full."""
    proc = _rank1_raises_holding_a_blocker(tmp_path, tmp_path / "run", error)
    assert proc.returncode != 0 and expected in proc.stderr.splitlines(), proc.stderr
    if expected.startswith("error:"):
        assert proc.returncode == 2 and proc.stderr.splitlines() == [expected], proc.stderr


def _stop_after_first_checkpoint(proc: subprocess.Popen, run: Path, stop) -> str:
    """Wait for the run's first checkpoint, call `stop`, and return the run's stderr (killed if it does not end)."""
    try:
        while proc.poll() is None and not list_checkpoints(run / "checkpoints"):
            time.sleep(0.05)
        stop()
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return stderr


def test_ctrl_c_on_a_two_process_run_is_one_line(tmp_path):
    """Ctrl-C (SIGINT to the launcher's process group, as a terminal sends it): torchrun forwarded it to the ranks,
    then printed its log lines and a SignalException traceback around the ranks' 'interrupted:' line (exit 1)."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "dlf", "train", "--out", str(run), *TINY, "--nproc", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=default_sigint)
    stderr = _stop_after_first_checkpoint(proc, run, lambda: os.killpg(proc.pid, signal.SIGINT))
    assert proc.returncode == 130 and stderr.splitlines() == [
        f"interrupted: continue with dlf train --resume {run}"], stderr


def test_ctrl_c_while_the_ranks_start_is_one_line(tmp_path):
    """A Ctrl-C before the ranks could print their line (importing, here sleeping in sitecustomize) showed torchrun's
    SignalException traceback and exited 1; now the launcher's line alone, and 130."""
    hook = ("import os, signal, time\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)  # pytest in the background: SIGINT ignored\n"
            "if 'RANK' in os.environ:\n"
            "    if os.environ['RANK'] == '0':  # Ctrl-C: the launcher, torchrun's parent\n"
            "        stat = open(f'/proc/{os.getppid()}/stat').read()\n"
            "        os.kill(int(stat.rsplit(')', 1)[1].split()[1]), signal.SIGINT)\n"
            "    time.sleep(60)\n")
    run = tmp_path / "run"
    proc = _nproc2_lr_with_hook(tmp_path, hook, "--out", str(run), timeout=120)
    assert proc.returncode == 130 and proc.stderr.splitlines() == [
        f"interrupted: continue with dlf train --resume {run}"], proc.stderr


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_launcher_alone_stops_every_rank(tmp_path, sig, code):
    """`kill PID` of `dlf train --nproc 2` ended the launcher alone: torchrun and both ranks trained on, orphaned,
    writing the run's checkpoints beside the `dlf train --resume` the user then started. `kill -INT PID` (a job
    runner's interrupt) was ignored: the run trained on to its end and exited 0."""
    from test_train_resume import _descendants

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "dlf", "train", "--out", str(run), *TINY, "--nproc", "2",
                             "--set", "train.epochs=50", "--set", "data.synthetic.rows=20000",
                             "--set", "train.patience=10000"],  # no early stop before the signal
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    below = []

    def stop():
        below.extend(_descendants(proc.pid))  # torchrun and the two ranks
        proc.send_signal(sig)

    stderr = _stop_after_first_checkpoint(proc, run, stop)
    assert proc.returncode == code and stderr.splitlines() == [
        f"interrupted: continue with dlf train --resume {run}"], stderr
    assert len(below) == 3 and not [pid for pid in below if os.path.exists(f"/proc/{pid}")]


def _processes_of(run: Path) -> list[int]:
    """Ids of the live processes whose command line names `run` (zombies have an empty one)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if str(run).encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
    return found


@pytest.mark.parametrize("group", [True, False], ids=["process-group", "launcher-alone"])
def test_sigkill_of_the_launcher_stops_every_rank(tmp_path, group):
    """`kill -9 -PGID` of `dlf train --nproc 2` killed the launcher and torchrun alone: torchrun starts the ranks in
    sessions of their own, so they trained on, orphaned, writing the run's checkpoints. `kill -9 PID` of the launcher
    alone left torchrun training too."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "dlf", "train", "--out", str(run), *TINY, "--nproc", "2",
                             "--set", "train.epochs=50", "--set", "data.synthetic.rows=20000",
                             "--set", "train.patience=10000", "--set", "train.checkpoint_every_steps=1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _stop_after_first_checkpoint(proc, run, lambda: (os.killpg if group else os.kill)(proc.pid, signal.SIGKILL))
        # a rank stops as on Ctrl-C at once, or is ended later: 10 s after torchrun's death (the orphan's own timer),
        # or 30 s after torchrun's SIGINT (torchrun's shutdown timeout; seen: a rank stuck in gloo's teardown)
        deadline = time.monotonic() + (20 if group else 45)
        while _processes_of(run) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _processes_of(run)
        assert not list(run.rglob(".*"))  # no checkpoint left half-written as a hidden temporary file
    finally:
        for pid in _processes_of(run):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_nproc_passes_on_stderr_that_is_not_utf8(tmp_path):
    """A rank writing a Latin-1 byte to stderr (a library's message) ended `dlf train --nproc` with a
    UnicodeDecodeError traceback while its ranks trained on."""
    proc = _nproc2_lr_with_hook(tmp_path, "import os\nif os.environ.get('RANK') == '1':\n"
                                          "    os.write(2, b'caf\\xe9 au lait\\n')\n", **{"data.synthetic.rows": 1000})
    assert proc.returncode == 0 and proc.stderr.splitlines() == ["caf\ufffd au lait"], proc.stderr


def test_nproc_shows_torchrun_report_when_a_rank_is_killed_without_a_word(tmp_path):
    """Rank 1 SIGKILLed (the OOM killer, say): rank 0's peer-lost line counted as the reason, so torchrun's report,
    the only place that names the signal, was dropped."""
    proc = _nproc2_lr_with_hook(tmp_path, _at_rank1_step_3("os.kill(os.getpid(), signal.SIGKILL)"))
    assert proc.returncode not in (0, 2) and "Signal 9 (SIGKILL) received by PID" in proc.stderr, proc.stderr
    assert "│" not in proc.stderr, proc.stderr  # rank 0: SIGTERMed by torchrun, or the peer-lost line; no traceback


RNG_WORKER = """
import os, sys
from unittest import mock
import torch
import torch.distributed as td
from dlf.train.checkpoint import TrainState, list_checkpoints, load_checkpoint, restore_rng, save_checkpoint
from dlf.train.distributed import DistContext

rank, out = int(os.environ["RANK"]), sys.argv[1]
td.init_process_group("gloo")
# this process's generator of each of 2 fake CUDA devices; rank r trains on device r
gens = {i: torch.full((16,), 1 + 10 * rank + i, dtype=torch.uint8) for i in range(2)}
torch.cuda.get_rng_state = lambda device="cuda": gens[torch.device(device).index].clone()
torch.cuda.set_rng_state = lambda state, device="cuda": gens.__setitem__(torch.device(device).index, state.clone())
device = torch.device("cuda", rank)
torch.manual_seed(100 + rank)
cpu_before, own_before = torch.get_rng_state(), gens[rank].clone()
cpu, cuda = DistContext(rank, 2, rank, device, "gloo").gather_rng()
if rank == 0:  # rank 0 also saves its own process's view of every device (rng/cuda/<i>), as on a 2-GPU machine
    with mock.patch("torch.cuda.is_available", lambda: True), mock.patch("torch.cuda.is_initialized", lambda: True), \\
            mock.patch("torch.cuda.get_rng_state_all", lambda: [gens[0].clone(), gens[1].clone()]):
        save_checkpoint(out, model_state={"w": torch.zeros(1)}, optimizer_state={"state": {}, "param_groups": []},
                        state=TrainState(global_step=3), config={}, rank_rng=cpu, rank_cuda_rng=cuda)
td.barrier()
for i in gens:  # training moved every generator on
    gens[i] = torch.zeros(16, dtype=torch.uint8)
torch.manual_seed(0)
restore_rng(load_checkpoint(list_checkpoints(out)[0]).rng_for_rank(rank, seed=5, device=device), device)
other_untouched = gens[1 - rank].tolist() == [0] * 16
os.write(1, f"rank {rank}: cpu {torch.equal(torch.get_rng_state(), cpu_before)} "
            f"own cuda {torch.equal(gens[rank], own_before)} other cuda {other_untouched}\\n".encode())
td.destroy_process_group()
"""


def test_each_rank_resumes_its_own_cuda_generator(tmp_path):
    """Rank 0 saved torch.cuda.get_rng_state_all(), its own process's generators of every device, and every rank
    restored all of them: rank r then drew from rank 0's never-used generator of device r, so ranks 1.. resumed
    with equal CUDA dropout streams. Each rank's own device generator is now gathered and restored on that rank
    alone. CUDA is faked (get/set_rng_state on per-device byte states): 2 gloo processes on fake devices 0 and 1."""
    script = tmp_path / "worker.py"
    script.write_text(RNG_WORKER)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script), str(tmp_path / "checkpoints")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = sorted(line for line in proc.stdout.splitlines() if line.startswith("rank "))
    assert lines == [f"rank {r}: cpu True own cuda True other cuda True" for r in (0, 1)], proc.stdout

"""Checkpoints: atomic single-file safetensors + JSON, verified on load, fallback to the previous
good one, and no code execution from a crafted file."""
import pickle
import warnings

import pytest
import torch

import dlf
from dlf.models import weights_mismatch
from dlf.train.checkpoint import (CheckpointError, TrainState, list_checkpoints, load_checkpoint, load_latest,
                                  save_checkpoint)
from dlf.train.trainer import TrainingError

TINY = {"model": {"name": "dlf", "embedding_dim": 8, "layers": 1, "rank": 2, "interaction_tokens": 2,
                  "implicit_tokens": 2, "hidden": 16},
        "data": {"synthetic": {"rows": 2000, "max_cardinality": 200}},
        "train": {"epochs": 2, "batch_size": 256, "threads": 1, "progress": False, "checkpoint_every_steps": 3}}


def _tiny(**train):
    cfg = {k: dict(v) for k, v in TINY.items()}
    cfg["train"] = {**cfg["train"], **train}
    return cfg


def _save(tmp_path, step, value=1.0):
    model = torch.nn.Linear(3, 1)
    torch.nn.init.constant_(model.weight, value)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.ones(2, 3)).sum().backward()
    opt.step()
    state = TrainState(epoch=1, step=step, global_step=step, history=[{"epoch": 1, "val_auc": 0.5}])
    return save_checkpoint(tmp_path, model_state=model.state_dict(), optimizer_state=opt.state_dict(), state=state,
                           config={"train": {"seed": 1}}, best_state=model.state_dict(), keep=2), model, opt


def test_roundtrip_restores_weights_optimizer_and_position(tmp_path):
    path, model, opt = _save(tmp_path, 5, value=0.25)
    ck = load_checkpoint(path)
    assert ck.state.global_step == 5 and ck.state.history[0]["val_auc"] == 0.5
    assert torch.equal(ck.model["weight"], model.weight.detach()) and torch.equal(ck.best["bias"], model.bias.detach())
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 1).parameters(), lr=1.0)
    opt2.load_state_dict(ck.optimizer)
    ref = opt.state_dict()
    for idx, slots in ref["state"].items():
        for key, value in slots.items():
            assert torch.equal(opt2.state_dict()["state"][idx][key], value)
    assert opt2.param_groups[0]["lr"] == 1e-3 and opt2.param_groups[0]["betas"] == ref["param_groups"][0]["betas"]
    assert ck.config == {"train": {"seed": 1}}


def test_only_the_newest_two_are_kept(tmp_path):
    for step in (1, 2, 3, 4):
        _save(tmp_path, step)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000004.safetensors", "step-000000003.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_latest_warns_and_previous_is_used(tmp_path, damage):
    _save(tmp_path, 1)
    newest, _, _ = _save(tmp_path, 2)
    raw = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":  # one byte of tensor data: only the digest can notice
        newest.write_bytes(raw[:-3] + bytes([raw[-3] ^ 0xFF]) + raw[-2:])
    else:
        newest.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or corrupted|corrupted"):
        load_checkpoint(newest)
    messages = []
    ck = load_latest(tmp_path, warn=messages.append)
    assert ck.state.global_step == 1
    assert len(messages) == 1 and "step-000000002" in messages[0] and "previous checkpoint" in messages[0]


def test_no_usable_checkpoint_is_a_clear_error(tmp_path):
    path, _, _ = _save(tmp_path, 1)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_latest(tmp_path)
    assert load_latest(tmp_path / "nothing-here") is None


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # unpickling would create the marker file


def test_crafted_pickle_checkpoint_does_not_execute(tmp_path):
    run = tmp_path / "run"
    dlf.train(_tiny(epochs=1), out=run)
    good = list_checkpoints(run / "checkpoints")[0]
    marker = tmp_path / "pwned"
    # a pickle (and a torch.save zip pickle) dressed as the newest checkpoint
    evil = run / "checkpoints" / "step-000099999.safetensors"
    evil.write_bytes(pickle.dumps(_Exploit(marker)))
    torch.save({"x": _Exploit(marker)}, run / "checkpoints" / "step-000099998.safetensors")
    assert not marker.exists()
    messages = []
    ck = load_latest(run / "checkpoints", warn=messages.append)
    assert ck.path == good and len(messages) == 2
    assert not marker.exists()
    # and a whole resume through the API survives it too
    metrics = dlf.train(None, resume=run)
    assert not marker.exists() and metrics["epochs_run"] == 1


def test_fresh_run_into_a_directory_with_checkpoints_is_refused(tmp_path):
    run = tmp_path / "run"
    dlf.train(_tiny(epochs=1), out=run)
    with pytest.raises(TrainingError, match="--resume"):
        dlf.train(_tiny(epochs=1), out=run)


def test_resume_with_another_models_checkpoint_is_a_one_line_error(tmp_path):
    dnn, run = tmp_path / "dnn", tmp_path / "run"
    dlf.train({**_tiny(epochs=1), "model": {"name": "dnn", "embedding_dim": 8, "hidden_units": [16]}}, out=dnn)
    dlf.train(_tiny(epochs=1), out=run)
    for path in list_checkpoints(run / "checkpoints"):
        path.unlink()
    foreign = list_checkpoints(dnn / "checkpoints")[0]
    (run / "checkpoints" / foreign.name).write_bytes(foreign.read_bytes())
    with pytest.raises(TrainingError) as exc:
        dlf.train(_tiny(epochs=2), resume=run)
    message = str(exc.value)
    assert f"{foreign.name}: its weights do not fit this DLF model" in message and "\n" not in message
    assert "missing key(s) (layers.0." in message and "unexpected key(s) (mlp." in message


def test_weights_mismatch_summarises_shapes_and_keys():
    model = torch.nn.Linear(3, 2)
    assert weights_mismatch(model, model.state_dict()) is None
    assert weights_mismatch(model, {"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}) == \
        "1 shape mismatch(es), saved vs model (weight (2, 4) vs (2, 3))"
    assert weights_mismatch(model, {"weight": torch.zeros(2, 3)}) == "1 missing key(s) (bias)"


def test_a_corrupted_newer_checkpoint_does_not_push_new_ones_out_of_the_rotation(tmp_path):
    """A resume that fell back past a damaged step-999 went on writing step 5, 6, ...: ranked newest, the damaged
    file stayed and, with keep=1, each new checkpoint was deleted right after it was written (the run was lost)."""
    _save(tmp_path, 4)
    (tmp_path / "step-000000999.safetensors").write_bytes(b"damaged")
    for step in (5, 6):
        assert save_checkpoint(tmp_path, **_save_args(step), keep=1).exists()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000006.safetensors"]
    assert load_latest(tmp_path).state.global_step == 6


def _save_args(step):
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return {"model_state": model.state_dict(), "optimizer_state": opt.state_dict(),
            "state": TrainState(global_step=step), "config": {}}


def test_temporary_files_of_a_write_cut_off_by_a_kill_are_removed_by_the_next_save(tmp_path):
    """SIGKILL during a write leaves the temporary file (as large as a checkpoint); nothing removed it, so each
    pre-emption mid-write left one more behind."""
    leftover = tmp_path / ".step-000000003.safetensors.k2j4x9.tmp"
    leftover.write_bytes(b"half a checkpoint")
    other = tmp_path / "notes.tmp"  # not ours: kept
    other.write_text("x")
    _save(tmp_path, 4)
    assert not leftover.exists() and other.exists()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000004.safetensors"]


def test_a_checkpoint_write_that_fails_is_one_error_and_the_earlier_ones_still_load(tmp_path, monkeypatch):
    """Disk full during the second checkpoint was an OSError traceback; the first must still load."""
    import errno
    import importlib

    ckpt_module = importlib.import_module("dlf.train.checkpoint")  # (dlf.train is also the function)
    real, calls = ckpt_module.atomic_write_bytes, []

    def full_disk(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(ckpt_module, "atomic_write_bytes", full_disk)
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"cannot write a checkpoint of step 6 into .*checkpoints: No space left "
                                            "on device; the checkpoints written before are intact"):
        dlf.train(_tiny(epochs=1), out=run)
    assert load_latest(run / "checkpoints").state.global_step == 3
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("edit", ["drop has_best", "state not a mapping", "doc a list"])
def test_a_checkpoint_with_an_unreadable_header_is_a_checkpoint_error(tmp_path, edit):
    """A header without its own SHA-256 (an older checkpoint; the tensors' digest cannot cover it): a hand-edited or
    foreign one was a KeyError / TypeError / AttributeError traceback instead of a CheckpointError, which resume
    reports and falls back from."""
    import json

    from safetensors.torch import load_file
    from safetensors.torch import save as st_save
    from safetensors import safe_open

    path, _, _ = _save(tmp_path, 3)
    with safe_open(str(path), "pt") as f:
        doc = json.loads(f.metadata()["dlf_checkpoint"])
    if edit == "drop has_best":
        del doc["has_best"]
    elif edit == "state not a mapping":
        doc["state"] = 7
    else:
        doc = [doc]
    path.write_bytes(st_save(load_file(path), metadata={"dlf_checkpoint": json.dumps(doc)}))
    with pytest.raises(CheckpointError, match="checkpoint"):
        load_checkpoint(path)


def _processed_run(tmp_path, seed=0):
    """A 1-epoch lr run on a processed dataset built from the demo CSV."""
    from rich.console import Console

    from dlf.data.preprocess import preprocess
    from dlf.serve.demo import write_demo_csv, write_demo_schema
    data, run = tmp_path / "data", tmp_path / "run"
    fm = preprocess("generic", [write_demo_csv(tmp_path / f"rows-{seed}.csv", 600, seed=seed)], data,
                    schema=write_demo_schema(tmp_path / "schema.yaml")).feature_map
    cfg = {"model": {"name": "lr"}, "data": {"path": str(data)},
           "train": {"epochs": 1, "batch_size": 128, "threads": 1, "progress": False}}
    dlf.train(cfg, out=run, console=Console(quiet=True))
    return data, run, fm


def test_resume_on_data_preprocessed_again_is_refused_even_with_equal_vocabulary_sizes(tmp_path):
    """The checkpoint did not say which processed data it was trained on: rebuilt from other rows with the same
    vocabulary sizes, the weights loaded and training went on, although every id now meant another value."""
    from rich.console import Console

    from dlf.data.preprocess import preprocess
    from dlf.serve.demo import write_demo_csv
    data, run, before = _processed_run(tmp_path)
    quiet = Console(quiet=True)
    ck = load_latest(run / "checkpoints")
    assert ck.data == {k: before.meta[k] for k in ("schema_hash", "fingerprint", "pipeline_version")}
    dlf.train(None, resume=run, console=quiet)  # the same data: resumes
    after = preprocess("generic", [write_demo_csv(tmp_path / "rows-7.csv", 600, seed=7)], data,
                       schema=tmp_path / "schema.yaml").feature_map
    assert [f.vocab_size for f in after.fields] == [f.vocab_size for f in before.fields]  # the weights would load
    with pytest.raises(TrainingError) as exc:
        dlf.train(None, resume=run, console=quiet)
    message = str(exc.value)
    assert (f"fingerprint {before.meta['fingerprint'][:12]} -> {after.meta['fingerprint'][:12]}" in message
            and "preprocess the data back" in message and "fresh run" in message and "\n" not in message)
    assert "schema_hash" not in message  # the same schema: only what differs is named


def test_a_checkpoint_without_the_data_identity_still_resumes(tmp_path):
    """Checkpoints written before the data identity was stored resume, with a warning that it cannot be checked."""
    import json

    from rich.console import Console
    from safetensors import safe_open
    from safetensors.torch import load_file
    from safetensors.torch import save as st_save

    _, run, _ = _processed_run(tmp_path)
    path = list_checkpoints(run / "checkpoints")[0]
    with safe_open(str(path), "pt") as f:
        doc = json.loads(f.metadata()["dlf_checkpoint"])
    del doc["data"]
    path.write_bytes(st_save(load_file(path), metadata={"dlf_checkpoint": json.dumps(doc)}))
    console = Console(record=True, width=300)
    dlf.train(None, resume=run, console=console)
    assert f"{path.name} predates data checks" in console.export_text()


@pytest.mark.parametrize("edit", [(b'\\"global_step\\": 5', b'\\"global_step\\": 9'),  # the loader position
                                  (b'\\"val_auc\\": 0.5', b'\\"val_auc\\": 0.9')])  # a metric in the history
def test_a_damaged_or_hand_edited_header_is_detected(tmp_path, edit):
    """The SHA-256 covered the tensor bytes only: an edited epoch, step or metric in the JSON header loaded as if
    it were what training wrote."""
    path, _, _ = _save(tmp_path, 5)
    raw = path.read_bytes()
    assert raw.count(edit[0]) == 1
    path.write_bytes(raw.replace(*edit))  # same length: the safetensors header still parses
    with pytest.raises(CheckpointError, match="its header document does not match the stored SHA-256"):
        load_checkpoint(path)


def test_a_checkpoint_written_before_the_header_digest_still_loads(tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file
    from safetensors.torch import save as st_save

    path, _, _ = _save(tmp_path, 5)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert set(meta) == {"dlf_checkpoint", "dlf_checkpoint_sha256"}
    path.write_bytes(st_save(load_file(path), metadata={"dlf_checkpoint": meta["dlf_checkpoint"]}))
    assert load_checkpoint(path).state.global_step == 5
    doc = json.loads(meta["dlf_checkpoint"])  # and its tensor digest is still checked
    doc["digest"] = "0" * 64
    path.write_bytes(st_save(load_file(path), metadata={"dlf_checkpoint": json.dumps(doc)}))
    with pytest.raises(CheckpointError, match="tensor bytes do not match"):
        load_checkpoint(path)


def test_weights_that_diverged_to_huge_finite_values_are_not_checkpointed(tmp_path):
    """train.lr=1e30: after step 1 DLF's weights were about 1e30, finite, and checkpointed; every resume from that
    checkpoint, at any train.lr, stopped at its next step ('training loss became nan at epoch 1, step 2')."""
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"the weights give predictions that are not finite after step 1 \(the "
                                            "update diverged\\): not checkpointed"):
        dlf.train(_tiny(lr=1e30, checkpoint_every_steps=1), out=run)
    assert not list_checkpoints(run / "checkpoints")


def test_the_check_of_a_checkpoints_predictions_leaves_training_as_it_was(tmp_path):
    """The forward that checks a mid-epoch checkpoint draws no dropout and updates no batch-norm statistics."""
    from safetensors.torch import load_file

    dnn = {"name": "dnn", "embedding_dim": 8, "hidden_units": [16], "dropout": 0.2, "batch_norm": True}
    for every in (0, 1):
        dlf.train({**_tiny(epochs=1, checkpoint_every_steps=every), "model": dnn}, out=tmp_path / str(every))
    plain, checked = (load_file(tmp_path / str(every) / "model.safetensors") for every in (0, 1))
    assert plain.keys() == checked.keys() and all(torch.equal(plain[k], checked[k]) for k in plain)

"""train.sparse_embedding: sparse gradients and row-wise optimiser updates for the fused embedding tables."""
import csv

import pytest
import torch
from rich.console import Console
from torch import nn

from conftest import random_batch
from dlf.config import ConfigError, load_config
from dlf.data.synthetic import generate
from dlf.models import build_model
from dlf.models.embedding import FieldEmbedding
from dlf.train.checkpoint import list_checkpoints, load_checkpoint
from dlf.train.rowwise import RowWiseAdagrad
from dlf.train.trainer import (PlateauController, TrainingError, build_optimizer, build_sparse_optimizer, fit,
                               rows_l2, sparse_embeddings)

DATA = ["data.synthetic.rows=2000", "data.synthetic.max_cardinality=200", "train.threads=1", "train.progress=false",
        "train.epochs=1"]
DLF = ["model.embedding_dim=8", "model.layers=1", "model.rank=2", "model.interaction_tokens=2",
       "model.implicit_tokens=2", "model.hidden=16"]
QUIET = Console(quiet=True)


def _train(model_name, *overrides, run_dir=None):
    """(initial weights, final weights, data) of one run; the model is built from the same seed every time."""
    cfg = load_config(None, DATA + list(overrides), model=model_name)
    data = generate(cfg.data.synthetic)
    torch.manual_seed(0)
    model = build_model(cfg.model_name, data.feature_map, cfg.model)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    fit(model, data.train, data.valid, cfg.train, QUIET, run_dir=run_dir)
    return initial, model.state_dict(), data


def test_one_adam_step_updates_the_batch_rows_like_dense_adam_and_no_other_row():
    # one step (the batch is the whole train split), with embedding L2: dense L2 moves every row of the table,
    # the sparse run's L2 covers only the rows the batch looked up
    common = [*DLF, "train.batch_size=1600", "train.clip_norm=0", "train.embedding_l2=0.1"]
    init_d, dense, data = _train("dlf", *common)
    init_s, sparse, _ = _train("dlf", *common, "train.sparse_embedding=true")
    assert all(torch.equal(init_d[k], init_s[k]) for k in init_d)  # both start from the same weights

    batch = next(data.train.batches(len(data.train)))
    emb = FieldEmbedding(data.feature_map, 8)
    touched = torch.zeros(len(init_d["embedding.table"]), dtype=torch.bool)
    touched[emb.batch_rows(batch)] = True
    assert 0 < touched.sum() < len(touched)
    table0 = init_d["embedding.table"]
    step_d, step_s = dense["embedding.table"] - table0, sparse["embedding.table"] - table0
    # SparseAdam adds eps before the bias correction (an effective eps of 3e-7 instead of 1e-8 at step 1): an
    # element with gradient g moves by up to lr * 3e-7 / |g| less (|g| >= 3e-5 here); the rest is the same step
    assert step_d[touched].abs().max() > 5e-4
    torch.testing.assert_close(step_s[touched], step_d[touched], rtol=0, atol=5e-5)
    assert torch.equal(sparse["embedding.table"][~touched], table0[~touched])  # untouched rows: not a bit changed
    assert (step_d[~touched] != 0).all()  # ... while dense L2 moved every one of them
    for k in dense:
        if k != "embedding.table":
            torch.testing.assert_close(sparse[k], dense[k], rtol=1e-5, atol=1e-7, msg=k)


def test_sparse_adagrad_follows_dense_adagrad_with_clipping_and_grad_norm_logging(tmp_path):
    # Adagrad's sparse update is the dense one restricted to the rows with a gradient, which are the only rows
    # dense Adagrad changes: a whole epoch matches. DeepFM has two fused tables (FM first order + embedding).
    common = ["model.embedding_dim=8", "model.hidden_units=[16]", "train.batch_size=256", "train.optimizer=adagrad",
              "train.lr=0.01", "train.clip_norm=0.05", "train.grad_norm_every_steps=1", "train.tensorboard=false"]
    _, dense, _ = _train("deepfm", *common, run_dir=tmp_path / "dense")
    _, sparse, _ = _train("deepfm", *common, "train.sparse_embedding=true", run_dir=tmp_path / "sparse")
    for k in dense:
        torch.testing.assert_close(sparse[k], dense[k], rtol=1e-5, atol=1e-6, msg=k)
    logs = [list(csv.DictReader((tmp_path / run / "grad_norms.csv").open())) for run in ("dense", "sparse")]
    assert len(logs[0]) == len(logs[1]) > 0
    for a, b in zip(*logs):
        assert (a["step"], a["group"]) == (b["step"], b["group"])
        assert float(b["grad_norm"]) == pytest.approx(float(a["grad_norm"]), rel=1e-5)
    total = {}
    for r in logs[1]:
        total[r["step"]] = total.get(r["step"], 0.0) + float(r["grad_norm"]) ** 2
    assert max(total.values()) ** 0.5 > 0.05  # so clipping was active


def test_rows_l2_penalises_each_looked_up_row_once_and_keeps_the_gradient_sparse(small_feature_map):
    emb = FieldEmbedding(small_feature_map, 4, init_std=1.0, sparse=True)
    batch = random_batch(small_feature_map, n=6)
    rows = emb.batch_rows(batch)
    assert torch.equal(rows, torch.unique(rows))
    expect = torch.cat([(batch.categorical + torch.tensor([0, 7])).flatten(), (batch.multi[batch.multi > 0] + 18)])
    assert set(rows.tolist()) == set(expect.tolist())  # padding (id 0 of tags, row 18) is not a looked-up row
    penalty = rows_l2([emb], batch)
    torch.testing.assert_close(penalty, emb.table[rows].pow(2).sum())
    penalty.backward()
    assert emb.table.grad.is_sparse
    want = torch.zeros_like(emb.table)
    want[rows] = 2 * emb.table[rows].detach()
    torch.testing.assert_close(emb.table.grad.to_dense(), want)


def test_both_optimisers_decay_on_a_plateau():
    cfg = load_config(None, DATA + DLF + ["train.sparse_embedding=true", "train.optimizer=adamw"])
    model = build_model("dlf", generate(cfg.data.synthetic).feature_map, cfg.model)
    tables = [m.table for m in sparse_embeddings(model)]
    dense, sparse = build_optimizer(model, cfg.train, exclude=tables), build_sparse_optimizer(tables, cfg.train)
    assert type(sparse) is torch.optim.SparseAdam and type(dense) is torch.optim.AdamW
    dense_ids = {id(p) for g in dense.param_groups for p in g["params"]}
    assert id(model.embedding.table) not in dense_ids and id(model.embedding.numeric_weight) in dense_ids
    ctl = PlateauController(decay=0.1, patience=5, min_lr=1e-6)
    for value in (0.5, 0.4, 0.3):
        ctl.step(value, dense, sparse)
    assert [g["lr"] for o in (dense, sparse) for g in o.param_groups] == pytest.approx([1e-5, 1e-5])


def test_checkpoint_holds_both_optimisers_and_a_switched_setting_is_refused_on_resume(tmp_path):
    _train("lr", "train.batch_size=256", "train.sparse_embedding=true", "train.tensorboard=false", run_dir=tmp_path)
    ck = load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[0])
    steps = ck.state.global_step
    assert ck.sparse_optimizer["state"][0]["step"] == steps  # SparseAdam: the table
    assert ck.sparse_optimizer["state"][0]["exp_avg"].shape == ck.model["embedding.table"].shape
    assert ck.optimizer["state"][0]["step"].item() == steps  # Adam: numeric weights and bias
    cfg = load_config(None, DATA + ["train.batch_size=256"], model="lr")
    data = generate(cfg.data.synthetic)
    model = build_model("lr", data.feature_map, cfg.model)
    with pytest.raises(TrainingError, match="train.sparse_embedding=true; resume with the same setting"):
        fit(model, data.train, data.valid, cfg.train, QUIET, resume=ck)


def test_a_model_without_a_fused_table_is_a_clear_error():
    class NoTable(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(1, 1)

        def forward(self, batch):
            return self.linear(batch.numeric[:, :1]).squeeze(-1)

    cfg = load_config(None, DATA + ["train.sparse_embedding=true"], model="lr")
    data = generate(cfg.data.synthetic)
    with pytest.raises(TrainingError, match="sparse_embedding=true needs a model with a fused embedding table"
                                            ".*NoTable has none"):
        fit(NoTable(), data.train, data.valid, cfg.train, QUIET)


def test_embedding_l2_still_shrinks_the_table_in_sparse_mode():
    common = [*DLF, "train.batch_size=256", "train.sparse_embedding=true"]
    norms = [float(_train("dlf", *common, *extra)[1]["embedding.table"].norm()) for extra in
             ([], ["train.embedding_l2=1000"])]
    assert norms[1] < 0.5 * norms[0]


def test_rowwise_adagrad_keeps_one_accumulator_per_row_and_steps_by_the_formula():
    table = nn.Parameter(torch.randn(6, 4))
    opt = RowWiseAdagrad([table], lr=0.5)
    w0 = table.detach().clone()
    grads = [torch.sparse_coo_tensor(torch.tensor([[1, 4, 1]]), torch.arange(12.0).view(3, 4) - 5, (6, 4)),
             torch.sparse_coo_tensor(torch.tensor([[4]]), torch.full((1, 4), 2.0), (6, 4))]
    want, acc = w0.clone(), torch.zeros(6)
    for g in grads:
        table.grad = g
        opt.step()
        dense = g.to_dense()  # duplicate lookups of a row add up
        rows = dense.abs().sum(1) > 0
        acc[rows] += dense[rows].pow(2).mean(1)  # s_i += mean_j g_ij^2
        want[rows] -= 0.5 * dense[rows] / (acc[rows].sqrt() + 1e-8).unsqueeze(1)
    torch.testing.assert_close(table.detach(), want)
    assert opt.state[table]["sum"].shape == (6,)  # V floats, not V x d
    torch.testing.assert_close(opt.state[table]["sum"], acc)
    assert torch.equal(table.detach()[[0, 2, 3, 5]], w0[[0, 2, 3, 5]])  # rows never looked up: untouched
    table.grad = torch.ones(6, 4)
    with pytest.raises(ValueError, match="needs sparse gradients"):
        opt.step()


def test_rowwise_adagrad_trains_the_tables_and_needs_sparse_gradients():
    with pytest.raises(ConfigError, match="set train.sparse_embedding=true as well"):
        load_config(None, DATA + ["train.embedding_optimizer=rowwise_adagrad"], model="lr")
    common = [*DLF, "train.batch_size=256", "train.sparse_embedding=true", "train.embedding_optimizer=rowwise_adagrad",
              "train.embedding_lr=0.05"]
    init, final, data = _train("dlf", *common)
    moved = (final["embedding.table"] - init["embedding.table"]).abs().sum(1) > 0
    assert 0 < moved.sum() < len(moved)  # the rows the batches looked up, and only those
    cfg = load_config(None, DATA + common, model="dlf")
    model = build_model("dlf", data.feature_map, cfg.model)
    tables = [m.table for m in sparse_embeddings(model)]
    opt = build_sparse_optimizer(tables, cfg.train)
    assert type(opt) is RowWiseAdagrad and opt.param_groups[0]["lr"] == 0.05


def test_embedding_lr_without_sparse_embedding_is_refused_not_ignored():
    # dense tables are in train.optimizer's one lr group: train.embedding_lr=0.5 trained exactly as without it
    with pytest.raises(ConfigError, match=r"train.embedding_lr=0.5 .*set train.sparse_embedding=true as well"):
        load_config(None, DATA + ["train.embedding_lr=0.5"], model="lr")
    assert load_config(None, DATA + ["train.embedding_lr=0.5", "train.sparse_embedding=true"],
                       model="lr").train.embedding_lr == 0.5


def test_resuming_with_another_embedding_optimizer_is_refused(tmp_path):
    _train("lr", "train.batch_size=256", "train.sparse_embedding=true", "train.tensorboard=false", run_dir=tmp_path)
    ck = load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[0])  # written with SparseAdam
    cfg = load_config(None, DATA + ["train.batch_size=256", "train.sparse_embedding=true",
                                    "train.embedding_optimizer=rowwise_adagrad"], model="lr")
    data = generate(cfg.data.synthetic)
    model = build_model("lr", data.feature_map, cfg.model)
    with pytest.raises(TrainingError, match="another train.optimizer or train.embedding_optimizer"):
        fit(model, data.train, data.valid, cfg.train, QUIET, resume=ck)

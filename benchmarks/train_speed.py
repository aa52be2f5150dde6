"""Training speed, step profile and peak memory of DLF and baselines on Criteo-shaped synthetic data.

    python benchmarks/train_speed.py                       # all models, batch 4,096 and 10,000, bf16 and fp32
    python benchmarks/train_speed.py --models dlf_concat --batch-sizes 10000 --precision bf16 --steps 5
    python benchmarks/train_speed.py --models dlf_concat --batch-sizes 10000 --rows 1000000 --steps 3   # RSS check
    python benchmarks/train_speed.py --interleave --models dlf_concat,dlf --steps 10   # step-time ratio, drift-free
    DLF_MALLOC_TUNING=0 python benchmarks/train_speed.py --models dlf_concat,dlf --batch-sizes 10000 \
        --precision bf16 --rows 1000000 --set checkpoint_layers=true     # the low-memory setting
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python benchmarks/train_speed.py ...  # on TCMalloc
    python benchmarks/train_speed.py --device cuda --batch-sizes 10000,65536 --eval-rows 200000   # on a GPU
    python benchmarks/train_speed.py --auc-check           # test AUC, bf16 vs fp32 paired by seed, small synthetic run
    python benchmarks/train_speed.py --auc-check --auc-data runs/data/frappe   # ... on a processed real dataset

Data: `dlf.data.synthetic` with 26 categorical fields (Zipf values, log-spaced vocabularies up to
--max-cardinality, ~940k embedding rows in all by default, about Criteo's with min-count 10) and 13 heavy-tailed
numeric fields, generated once into --cache by a child process (so its memory is not in the figures).

Each (model, precision, batch) runs in its own child process that loads the rows into memory (as `dlf train`
does with synthetic data), builds the model from the registry defaults (the authors' sizes: DLF d=64, 3 layers,
rank 24, 32+32 tokens, width 512) and the optimiser with `dlf.train.trainer.build_optimizer` (Adam, lr 1e-3),
and runs the trainer's step: zero_grad, autocast forward, BCE, backward, clip (norm 10), step. It times
`--warmup` + `--steps` steps and reports, over the timed ones: samples/s, the step split into loader (drawing
the next shuffled batch) / forward (incl. loss) / backward / optimiser (clip + step), its own peak RSS
(ru_maxrss: data, model, optimiser state, activations), the activations alone (what autograd keeps of one forward
pass for the backward, "act GB"), GFLOP/s achieved from an analytic count of each model's
products (`train_flops_per_sample`: 3 x 2 x forward multiply-adds; checked against torch's FlopCounterMode in
tests/test_speed_flops.py), and evaluation (predict_proba) samples/s. The parent measures this machine's fp32
and bf16 matrix-product peak in the same run, so every figure is also a fraction of the limit.

When `fuxictr` is importable (`pip install -e '.[fuxictr]'`) and --fuxictr-zoo points at a folder holding FuxiCTR's
model_zoo/WuKong/src and model_zoo/DCNv2/src (from the reczoo/FuxiCTR repository; the PyPI wheel has no model_zoo),
FuxiCTR's WuKong and DCNv2 are timed on the same batches (fp32, its train_step) and our/their ratios printed.

Timings on a shared machine are noisy: compare ratios taken in the same run, and repeat.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import yaml

MODELS = ("dlf_concat", "dlf", "wukong", "dcnv2")


# ---------------------------------------------------------------- analytic FLOP counts

def dlf_forward_macs(cfg, num_fields: int) -> int:
    """Multiply-adds per sample of DLF's products (token mixes, crosses, MLPs, NAF, gate, head), as implemented in
    dlf.models.dlf. Norms, activations and the embedding lookup are not counted."""
    d, r, n_f, n_l, h = cfg.embedding_dim, cfg.rank, cfg.interaction_tokens, cfg.implicit_tokens, cfg.hidden
    macs, n_in = 0, num_fields
    for _ in range(cfg.layers):
        n_out = n_f * cfg.beta + n_f * cfg.alpha + n_l * cfg.gamma
        k = r * cfg.beta + r * cfg.alpha + n_l * cfg.gamma + (n_out if n_in != n_out else 0)
        macs += n_in * k * d  # [W_C | W_L | W_D | R]^T E
        mlp = n_in * r * h + h * n_f * d  # MLP(LN(flat(s))): N_l r -> h -> n_F d
        if cfg.beta:
            macs += n_in * d * r + mlp  # s_C = E (E^T W_C)
        if cfg.alpha:
            macs += num_fields * d * r + mlp  # E1 (E^T W_L)
            if n_in != num_fields:
                macs += n_in * num_fields * r  # P^T (E1 (E^T W_L))
        if cfg.fusion == "attention":
            branch_tokens = [n for n, on in ((n_f, cfg.beta), (n_f, cfg.alpha), (n_l, cfg.gamma)) if on]
            keys = sum(min(cfg.fusion_slots, n) for n in branch_tokens) if cfg.fusion_slots else n_out
            macs += (n_out * keys * d if cfg.fusion_slots else 0)  # S = P^T Z (P: N x 3m, block-diagonal in zeros)
            macs += 2 * cfg.attention_heads * n_out * keys * d  # S Q_bd and A S: every head over all d columns
        if cfg.gate:
            macs += n_out * d  # R^T E w_g
        n_in = n_out
    return macs + n_in * d * h + h  # head


def wukong_forward_macs(cfg, num_fields: int) -> int:
    d, r, h = cfg.embedding_dim, cfg.rank, cfg.hidden
    macs, n_in = 0, num_fields
    for _ in range(cfg.layers):
        n_out = cfg.fmb_tokens + cfg.lcb_tokens
        macs += 2 * n_in * r * d + n_in * r * h + h * cfg.fmb_tokens * d  # FMB: X (X^T Y), MLP
        macs += n_in * cfg.lcb_tokens * d + (n_in * n_out * d if n_in != n_out else 0)  # LCB, residual projection
        n_in = n_out
    return macs + n_in * d * h + h


def dcnv2_forward_macs(cfg, num_fields: int) -> int:
    dim = num_fields * cfg.embedding_dim
    if cfg.low_rank_mixture:
        k, r = cfg.experts, cfg.low_rank
        macs = cfg.cross_layers * (k * (2 * dim * r + r * r) + dim * k)
    else:
        macs = cfg.cross_layers * dim * dim
    last = dim
    if cfg.structure != "crossnet_only":
        units = [dim, *cfg.hidden_units]
        macs += sum(a * b for a, b in zip(units, units[1:]))
        last = cfg.hidden_units[-1] + (dim if cfg.structure == "parallel" else 0)
    return macs + last


def forward_macs(model_name: str, cfg, num_fields: int) -> int:
    if model_name in ("dlf", "dlf_concat"):
        return dlf_forward_macs(cfg, num_fields)
    if model_name == "wukong":
        return wukong_forward_macs(cfg, num_fields)
    if model_name == "dcnv2":
        return dcnv2_forward_macs(cfg, num_fields)
    raise KeyError(f"no FLOP count for model {model_name!r}")


def train_flops_per_sample(model_name: str, cfg, num_fields: int) -> int:
    """Forward + backward: every product is done three times (output, input gradient, weight gradient)."""
    return 6 * forward_macs(model_name, cfg, num_fields)


# ---------------------------------------------------------------- machine limit

def synchronize(device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; timings must not stop at the launch)."""
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype_name: str, seconds: float = 2.0, device: str = "cpu") -> float:
    """Best GFLOP/s of square products (n = 2,048 and 4,096; 8,192 on CUDA) on this machine, now."""
    import torch
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    device = torch.device(device)
    best = 0.0
    for n in (2048, 4096) if device.type == "cpu" else (4096, 8192):
        a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
        a @ b
        synchronize(device)
        stop = time.perf_counter() + seconds / 2
        while time.perf_counter() < stop:
            t = time.perf_counter()
            a @ b
            synchronize(device)
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return best


# ---------------------------------------------------------------- data

def data_config(rows: int, max_cardinality: int, seed: int = 2025):
    from dlf.data.synthetic import SyntheticConfig
    return SyntheticConfig(rows=rows, splits=(0.98, 0.01, 0.01), categorical=26, numeric=13, multi_valued=False,
                           max_cardinality=max_cardinality, seed=seed)


def ensure_data(cache: Path, rows: int, max_cardinality: int) -> Path:
    """Generate (once, in a child process) and return the folder holding the train split as .npy files."""
    cfg = data_config(rows, max_cardinality)
    key = hashlib.sha1(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    folder = cache / f"criteo_like_{rows}_{max_cardinality}_{key}"
    if (folder / "feature_map.json").is_file():
        return folder
    print(f"generating {rows:,} Criteo-shaped rows into {folder} ...", flush=True)
    subprocess.run([sys.executable, __file__, "--generate", str(folder), "--rows", str(rows),
                    "--max-cardinality", str(max_cardinality)], check=True)
    return folder


def generate_into(folder: Path, rows: int, max_cardinality: int) -> None:
    from dlf.data.synthetic import generate
    data = generate(data_config(rows, max_cardinality))
    tmp = folder.with_name(folder.name + ".part")
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("categorical", "numeric", "label"):
        np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(data.train, name)))
    data.feature_map.save(tmp / "feature_map.json")
    tmp.rename(folder)


def load_data(folder: Path, loader: str):
    from dlf.data.dataset import ArrayDataset
    from dlf.data.features import FeatureMap
    from dlf.data.store import MappedDataset
    fm = FeatureMap.load(folder / "feature_map.json")
    mmap = "r" if loader == "mapped" else None
    cols = {n: np.load(folder / f"{n}.npy", mmap_mode=mmap) for n in ("categorical", "numeric", "label")}
    multi = np.zeros((len(cols["label"]), 0, 0), dtype=np.int32)
    if loader == "mapped":
        return fm, MappedDataset(cols["categorical"], cols["numeric"], multi, cols["label"])
    return fm, ArrayDataset(cols["categorical"], cols["numeric"], multi, cols["label"])


# ---------------------------------------------------------------- one configuration (child process)

def parse_sets(ap: argparse.ArgumentParser, items: list[str]) -> dict:
    """--set KEY=VALUE items as {key: YAML value}; a malformed item is the parser's usage error."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: kilobytes


def build_for_job(job: dict, name: str, fm):
    """The model `name` with the job's overrides, its optimisers (as the trainer builds them) and the tables that get
    sparse gradients (none with the dense default)."""
    import torch

    from dlf.models import build_model, get_entry
    from dlf.train.trainer import build_optimizer, build_sparse_optimizer, sparse_embeddings

    cfg = get_entry(name).default_config()
    for key, value in job["set"].items():  # --set: applied to the models whose config has the key
        if hasattr(cfg, key):
            setattr(cfg, key, value)
    model = build_model(name, fm, cfg).to(torch.device(job["device"]))
    if job["compile"]:
        model = torch.compile(model)
    rowwise = job["embedding_optimizer"] == "rowwise_adagrad"
    opt_cfg = argparse.Namespace(lr=1e-3, optimizer="adam", weight_decay=0.0, embedding_lr=0.01 if rowwise else 0.0,
                                 embedding_optimizer="rowwise_adagrad" if rowwise else "auto")
    # dense: Adam over everything (the default); sparse_adam / rowwise_adagrad: the trainer's train.sparse_embedding
    tables = [] if job["embedding_optimizer"] == "dense" else [m.table for m in sparse_embeddings(model)]
    optimizers = [build_optimizer(model, opt_cfg, exclude=tables)]
    if tables:
        optimizers.append(build_sparse_optimizer(tables, opt_cfg))
    model.train()
    return model, cfg, optimizers, tables


def timed_step(model, optimizers, tables, batches, device, precision: str) -> tuple[float, float, float, float]:
    """One trainer step (zero_grad, autocast forward, BCE, backward, clip, step): seconds spent in the loader,
    forward (incl. loss), backward and optimiser."""
    import torch
    import torch.nn.functional as F

    from dlf._runtime import autocast
    from dlf.train.trainer import clip_grad_norm_

    t0 = time.perf_counter()
    batch = next(batches).to(device)  # (on CUDA the loader's time includes the copy to the device)
    synchronize(device)
    t1 = time.perf_counter()
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    with autocast(device, precision):
        logits = model(batch)
    loss = F.binary_cross_entropy_with_logits(logits.float(), batch.label)
    if not torch.isfinite(loss):
        raise SystemExit(f"training loss became {loss.item()} (lower the learning rate or check the data)")
    t2 = time.perf_counter()
    loss.backward()
    synchronize(device)
    t3 = time.perf_counter()
    for t in tables:  # as the trainer does: duplicate rows summed once, before clipping
        t.grad = t.grad.coalesce()
    clip_grad_norm_(model.parameters(), 10.0)
    for optimizer in optimizers:
        optimizer.step()
    loss.item()
    return t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3


def saved_activations_gb(model, batch, device, precision: str) -> float:
    """Bytes the autograd graph of one forward pass keeps for the backward pass (distinct storages, parameters
    excluded): the activation memory a training step holds at its peak, apart from temporaries."""
    import torch

    from dlf._runtime import autocast

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def keep(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t), autocast(device, precision):
        model(batch)
    return sum(storages.values()) / 1e9


def shuffled_batches(job: dict, train, steps: int):
    """The benchmark's batch sequence (the same for every model), after checking the data holds `steps` batches."""
    need = steps * job["batch_size"]
    if need > len(train):
        raise SystemExit(f"{need:,} rows needed for {steps} steps of {job['batch_size']:,}; "
                         f"the dataset has {len(train):,} (raise --rows)")
    return train.batches(job["batch_size"], shuffle=True, seed=2025, epoch=0)


def run_worker(job: dict) -> dict:
    import torch

    from dlf._runtime import reuse_freed_memory
    from dlf.train.trainer import predict_proba

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    fm, train = load_data(Path(job["data"]), job["loader"])
    rss_data = peak_rss_gb()
    name, batch_size, precision = job["model"], job["batch_size"], job["precision"]
    device = torch.device(job["device"])
    model, cfg, optimizers, tables = build_for_job(job, name, fm)
    reuse_freed_memory()  # as fit() does

    steps, warmup = job["steps"], job["warmup"]
    batches = shuffled_batches(job, train, steps + warmup)
    times = []  # loader, forward, backward, optimiser
    for i in range(warmup + steps):
        parts = timed_step(model, optimizers, tables, batches, device, precision)
        if i >= warmup:
            times.append(parts)
        elif i == 0:
            first_step = sum(parts)
    # the training peaks, read before the extra forward pass below: it runs while the last step's gradients still
    # exist, so on CUDA it could raise the peak by up to their size
    rss_train = peak_rss_gb()
    gpu_train = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    activations = saved_activations_gb(model, next(shuffled_batches(job, train, 1)).to(device), device, precision)
    parts = np.mean(np.array(times), axis=0)
    step = float(parts.sum())
    flops = train_flops_per_sample(name, cfg, fm.num_fields)
    result = {**job, "num_fields": fm.num_fields, "embedding_rows": sum(f.vocab_size for f in fm.fields),
              "parameters": sum(p.numel() for p in model.parameters()), "step_s": step,
              "step_min_s": float(np.min(np.sum(times, axis=1))), "first_step_s": first_step,
              "loader_s": float(parts[0]), "forward_s": float(parts[1]), "backward_s": float(parts[2]),
              "optimizer_s": float(parts[3]), "samples_per_s": batch_size / step,
              "train_flops_per_sample": flops, "gflops": flops * batch_size / step / 1e9,
              "peak_rss_data_gb": rss_data, "peak_rss_gb": rss_train, "saved_activations_gb": activations}
    if gpu_train is not None:
        result["peak_gpu_gb"] = gpu_train
    if job["eval_rows"]:
        rows = min(job["eval_rows"], len(train))
        part = train if rows == len(train) else _head(train, rows)
        predict_proba(model, _head(train, min(rows, 16384)), 16384, device, precision)  # warm-up
        t = time.perf_counter()
        predict_proba(model, part, 16384, device, precision)  # (ends with a copy to the host: synchronised)
        result["eval_samples_per_s"] = rows / (time.perf_counter() - t)
    if job.get("fuxictr_zoo") and name in ("wukong", "dcnv2"):
        result["fuxictr"] = run_fuxictr(job, fm, train)
    return result


def run_interleaved(job: dict) -> dict:
    """All of job["models"] in this one process, taking turns step by step on the same batches: round k times step k
    of every model within seconds, so the machine's drift (2-3x over minutes here) hits every model of a round alike.
    Returns each model's step times, one per round."""
    import torch

    from dlf._runtime import reuse_freed_memory

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    fm, train = load_data(Path(job["data"]), job["loader"])
    device = torch.device(job["device"])
    runs = {name: build_for_job(job, name, fm) for name in job["models"]}
    reuse_freed_memory()
    streams = {name: shuffled_batches(job, train, job["steps"] + job["warmup"]) for name in runs}
    steps = {name: [] for name in runs}
    for i in range(job["warmup"] + job["steps"]):
        order = list(runs) if i % 2 == 0 else list(runs)[::-1]  # alternate who goes first (caches, heap state)
        for name in order:
            model, _, optimizers, tables = runs[name]
            seconds = sum(timed_step(model, optimizers, tables, streams[name], device, precision=job["precision"]))
            if i >= job["warmup"]:
                steps[name].append(seconds)
    return {**job, "step_s": steps}


def _head(data, rows: int):
    from dlf.data.dataset import ArrayDataset
    return ArrayDataset(np.asarray(data.categorical[:rows]), np.asarray(data.numeric[:rows]),
                        np.asarray(data.multi[:rows]), np.asarray(data.label[:rows]))


# ---------------------------------------------------------------- optional: FuxiCTR on the same batches

def run_fuxictr(job: dict, fm, train) -> dict:
    """FuxiCTR's WuKong / DCNv2 (model_zoo sources) on the same batches, fp32 (FuxiCTR has no autocast): step time.
    Sizes follow ours as far as FuxiCTR's structure allows: DCNv2 exactly (embedding 16, parallel, 3 cross
    layers, DNN 500-500-500); WuKong with embedding 64, 3 layers, projection rank 24, FMB MLP 512-512 and FMB and
    LCB outputs of n_F d = n_L d = 2048 values each, head MLP 512, no dropout (FuxiCTR's WuKong keeps F tokens
    per layer where ours keeps n_F + n_L). Best effort: any failure is reported, not raised."""
    try:
        import importlib.util

        import torch
        from fuxictr.features import FeatureMap as FxMap

        zoo_name = {"wukong": "WuKong", "dcnv2": "DCNv2"}[job["model"]]
        src = Path(job["fuxictr_zoo"]) / zoo_name / "src"
        spec = importlib.util.spec_from_file_location(f"fuxi_{zoo_name}", src / "__init__.py",
                                                      submodule_search_locations=[str(src)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        fx = FxMap("bench", str(job["data"]))
        fx.labels = ["label"]
        for f in fm.fields:
            if f.kind == "categorical":
                fx.features[f.name] = {"type": "categorical", "vocab_size": f.vocab_size, "padding_idx": 0,
                                       "source": "", "dtype": "int"}
            else:
                fx.features[f.name] = {"type": "numeric", "source": "", "dtype": "float"}
        fx.num_fields = len(fm.fields)
        fx.total_features = sum(f.vocab_size for f in fm.fields if f.kind == "categorical") + fm.num_fields
        fx.input_length = fx.num_fields
        fx.set_column_index()
        sizes = {"WuKong": dict(embedding_dim=64, num_layers=3, project_dim=24, fmb_units=[512, 512], fmb_dim=2048,
                                compression_dim=2048, mlp_hidden_units=[512], dropout_rate=0.0),
                 "DCNv2": dict(embedding_dim=16, model_structure="parallel", num_cross_layers=3,
                               parallel_dnn_hidden_units=[500, 500, 500])}[zoo_name]
        fx.default_emb_dim = sizes["embedding_dim"]  # (FeatureMap.sum_emb_out_dim reads it)
        model = getattr(module, zoo_name)(fx, gpu=-1, optimizer="adam", loss="binary_crossentropy", verbose=0,
                                          model_root=str(job["data"]), metrics=["logloss", "AUC"], **sizes)
        model._max_gradient_norm = 10.0  # set by FuxiCTR's fit(); train_step clips with it, as our step does
        cat = [f.name for f in fm.fields if f.kind == "categorical"]
        num = [f.name for f in fm.fields if f.kind == "numeric"]
        step_times = []
        for i, batch in enumerate(train.batches(job["batch_size"], shuffle=True, seed=2025, epoch=0)):
            if i >= job["warmup"] + job["steps"]:
                break
            inputs = {n: batch.categorical[:, j].long() for j, n in enumerate(cat)}
            inputs.update({n: batch.numeric[:, j] for j, n in enumerate(num)})
            inputs["label"] = batch.label
            t = time.perf_counter()
            model.train_step(inputs)
            if i >= job["warmup"]:
                step_times.append(time.perf_counter() - t)
        step = float(np.mean(step_times))
        return {"step_s": step, "samples_per_s": job["batch_size"] / step, "peak_rss_gb": peak_rss_gb()}
    except Exception as exc:  # noqa: BLE001 - optional comparison, report whatever went wrong
        return {"error": f"{type(exc).__name__}: {exc}"}


# ---------------------------------------------------------------- bf16 vs fp32 accuracy

def auc_check(args) -> None:
    """Train the same model from the same initial weights on the same batches in fp32 and in bf16 (trainer.fit),
    for each of --auc-seeds initial seeds, and compare test AUC: the paired gap bf16 - fp32 per seed, against the
    spread of fp32 AUC across seeds (how much two runs differing only in their initial weights disagree)."""
    import torch
    from rich.console import Console

    from dlf.config import TrainConfig
    from dlf.data.store import load_dataset
    from dlf.data.synthetic import generate
    from dlf.models import build_model, get_entry
    from dlf.train.trainer import evaluate, fit

    torch.set_num_threads(args.threads)
    if args.auc_data:
        data, what = load_dataset(args.auc_data), f"processed dataset {args.auc_data}"
    else:
        cfg = replace(data_config(args.auc_rows, args.auc_max_cardinality), splits=(0.8, 0.1, 0.1))
        data = generate(cfg)
        what = (f"{cfg.rows:,} synthetic rows (26 categorical up to {cfg.max_cardinality:,} values, "
                f"13 numeric)")
    seeds = range(args.auc_first_seed, args.auc_first_seed + args.auc_seeds)
    for model_name in args.models:
        auc = {}
        for seed in seeds:
            for precision in ("fp32", "bf16"):
                torch.manual_seed(seed)
                model = build_model(model_name, data.feature_map, get_entry(model_name).default_config())
                train_cfg = TrainConfig(epochs=args.auc_epochs, batch_size=args.auc_batch, eval_batch_size=16384,
                                        lr=1e-3, precision=precision, progress=False, tensorboard=False,
                                        patience=99, seed=seed)
                t = time.perf_counter()
                fit(model, data.train, data.valid, train_cfg, Console(quiet=True))
                seconds = time.perf_counter() - t
                m = evaluate(model, data.test, 16384, precision=precision)
                auc[precision, seed] = m["auc"]
                print(f"{model_name:10s} {precision} seed {seed}: test AUC {m['auc']:.5f}  logloss "
                      f"{m['logloss']:.5f}  ({seconds:.0f} s)", flush=True)
        gaps = np.array([auc["bf16", s] - auc["fp32", s] for s in seeds])
        fp32 = np.array([auc["fp32", s] for s in seeds])
        spread = f"; fp32 AUC across seeds: sd {fp32.std(ddof=1):.5f}" if len(fp32) > 1 else ""
        sd = f" (sd {gaps.std(ddof=1):.5f})" if len(gaps) > 1 else ""
        print(f"{model_name:10s} AUC bf16 - fp32, paired by seed: {' '.join(f'{g:+.5f}' for g in gaps)}; "
              f"mean {gaps.mean():+.5f}{sd}{spread}; |mean| {'<=' if abs(gaps.mean()) <= 0.001 else '>'} 0.001")
    print(f"data: {what}; {args.auc_epochs} epoch(s) at batch {args.auc_batch}, seeds {list(seeds)}")


# ---------------------------------------------------------------- driver

def run_child(job: dict) -> dict:
    """Runs one job in a fresh process (its own peak RSS, no state from earlier jobs): the result, or the error."""
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not line:
        return {**job, "error": (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["?"])[-1]}
    return json.loads(line[0][7:])


def print_interleaved(r: dict) -> None:
    """Per model: median step and samples/s; against the first model, the per-round step-time ratios' median, the 95%
    t-interval of their mean, and their range."""
    from scipy import stats

    if "error" in r:
        print(f"interleaved {r['precision']} batch {r['batch_size']}: failed: {r['error']}")
        return
    steps = {m: np.array(v) for m, v in r["step_s"].items()}
    base = r["models"][0]
    rounds = len(steps[base])
    print(f"interleaved, {r['precision']}, batch {r['batch_size']}, {rounds} rounds (after {r['warmup']} warm-up); "
          f"step time relative to {base}, per round:")
    for m, v in steps.items():
        line = f"  {m:11s} median step {np.median(v):6.2f} s  {r['batch_size'] / np.median(v):7.0f} samples/s"
        if m != base:
            ratio = v / steps[base]
            half = stats.t.ppf(0.975, rounds - 1) * ratio.std(ddof=1) / np.sqrt(rounds) if rounds > 1 else np.nan
            line += (f"  {m} / {base}: median {np.median(ratio):.3f}x, mean {ratio.mean():.3f}x "
                     f"[{ratio.mean() - half:.3f}, {ratio.mean() + half:.3f}], "
                     f"range {ratio.min():.3f}-{ratio.max():.3f}")
        print(line, flush=True)


def print_table(results: list[dict], peaks: dict) -> None:
    head = (f"{'model':11s} {'prec':4s} {'batch':>6s} {'samples/s':>9s} {'step s':>7s} {'loader':>6s} {'fwd':>5s} "
            f"{'bwd':>5s} {'opt':>5s} {'GFLOP/s':>7s} {'of peak':>7s} {'RSS GB':>6s} {'act GB':>6s} {'eval/s':>7s}")
    print(head)
    print("-" * len(head))
    for r in results:
        if "error" in r:
            print(f"{r['model']:11s} {r['precision']:4s} {r['batch_size']:>6d}  failed: {r['error']}")
            continue
        s = r["step_s"]
        pct = lambda x: f"{100 * x / s:4.1f}%"  # noqa: E731
        print(f"{r['model']:11s} {r['precision']:4s} {r['batch_size']:>6d} {r['samples_per_s']:>9.0f} {s:>7.2f} "
              f"{pct(r['loader_s']):>6s} {pct(r['forward_s']):>5s} {pct(r['backward_s']):>5s} "
              f"{pct(r['optimizer_s']):>5s} {r['gflops']:>7.1f} {100 * r['gflops'] / peaks[r['precision']]:>6.0f}% "
              f"{r['peak_rss_gb']:>6.2f} {r['saved_activations_gb']:>6.2f} "
              f"{r.get('eval_samples_per_s', float('nan')):>7.0f}"
              + (f"  GPU peak {r['peak_gpu_gb']:.2f} GB" if "peak_gpu_gb" in r else ""))
    by = {(r["model"], r["precision"], r["batch_size"]): r for r in results if "error" not in r}
    for (m, p, b), r in by.items():
        if m == "dlf" and ("dlf_concat", p, b) in by:
            print(f"attention / concat step time, {p}, batch {b}: "
                  f"{r['step_s'] / by[('dlf_concat', p, b)]['step_s']:.2f}x")
    for r in results:
        fx = r.get("fuxictr")
        if fx and "error" not in fx:
            print(f"FuxiCTR {r['model']} {r['precision']} batch {r['batch_size']}: "
                  f"{fx['samples_per_s']:.0f} samples/s; "
                  f"ours / theirs {r['samples_per_s'] / fx['samples_per_s']:.2f}x")
        elif fx:
            print(f"FuxiCTR {r['model']}: skipped ({fx['error']})")


def write_json(path: Path | None, results: dict) -> None:
    """--json, rewritten after every configuration: a run stopped by a time limit (benchmarks/gpu_check.sh gives it
    one) keeps the results of the configurations that finished (atomically: the limit may fall during a write)."""
    from dlf._io import atomic_write_text

    if path is not None:
        atomic_write_text(path, json.dumps(results, indent=1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated registry names")
    ap.add_argument("--batch-sizes", default="4096,10000")
    ap.add_argument("--precision", default="bf16,fp32", help="bf16, fp32 or both")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--rows", type=int, default=0, help="train rows generated (default: enough for the steps)")
    ap.add_argument("--max-cardinality", type=int, default=350_000, help="largest categorical vocabulary")
    ap.add_argument("--loader", choices=("array", "mapped"), default="array",
                    help="array: rows in memory (dlf train on synthetic data); mapped: memory-mapped .npy (--data)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast on CUDA as on CPU; try larger "
                    "--batch-sizes, e.g. 10000,65536)")
    ap.add_argument("--eval-rows", type=int, default=50_000, help="rows scored to time predict_proba (0: skip)")
    ap.add_argument("--interleave", action="store_true",
                    help="run all --models in one process, taking turns step by step, and print each model's step "
                         "time relative to the first model's, per round (ratios immune to the machine's drift)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (first step includes compiling)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="model config override (YAML value) for every model that has KEY, e.g. checkpoint_layers=true")
    ap.add_argument("--embedding-optimizer", choices=("dense", "sparse_adam", "rowwise_adagrad"), default="dense",
                    help="dense: Adam over every parameter; otherwise the embedding table gets sparse gradients and "
                         "SparseAdam or row-wise Adagrad (the trainer's train.sparse_embedding)")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "dlf-bench-data")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--fuxictr-zoo", type=Path, help="FuxiCTR's model_zoo folder (needs the fuxictr package)")
    ap.add_argument("--auc-check", action="store_true", help="bf16 vs fp32 test AUC on a small run, then exit")
    ap.add_argument("--auc-rows", type=int, default=150_000)
    ap.add_argument("--auc-max-cardinality", type=int, default=20_000)
    ap.add_argument("--auc-epochs", type=int, default=1)
    ap.add_argument("--auc-batch", type=int, default=2048)
    ap.add_argument("--auc-seeds", type=int, default=3, help="initial seeds per precision in the AUC check")
    ap.add_argument("--auc-first-seed", type=int, default=0, help="seeds of the AUC check start here")
    ap.add_argument("--auc-data", type=Path, help="AUC check on this processed dataset (dlf preprocess output)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.generate:
        generate_into(args.generate, args.rows, args.max_cardinality)
        return
    if args.worker:
        job = json.loads(args.worker)
        print("RESULT " + json.dumps(run_interleaved(job) if "models" in job else run_worker(job)))
        return
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.auc_check:
        auc_check(args)
        return

    import torch

    from dlf._runtime import malloc_library
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda: this torch build or machine has no CUDA device")
    if args.device != "cpu" and args.fuxictr_zoo:
        ap.error("--fuxictr-zoo runs FuxiCTR on the CPU only; drop it with --device cuda")
    torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    overrides = parse_sets(ap, args.set)
    precisions = [p.strip() for p in args.precision.split(",")]
    rows = args.rows or int((args.warmup + args.steps) * max(batch_sizes) / 0.98) + 1000
    folder = ensure_data(args.cache, rows, args.max_cardinality)
    fuxictr = None
    if args.fuxictr_zoo:
        import importlib.util
        fuxictr = str(args.fuxictr_zoo) if importlib.util.find_spec("fuxictr") else None
        if fuxictr is None:
            print("fuxictr is not installed: the FuxiCTR comparison is skipped")
    peaks = {p: matmul_peak(p, device=args.device) for p in ("fp32", "bf16")}
    gpu = f"{torch.cuda.get_device_name(args.device)}, " if args.device != "cpu" else ""
    print(f"machine: {gpu}{os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads, "
          f"model overrides {overrides or 'none'}, embedding optimiser {args.embedding_optimizer}, "
          f"malloc {malloc_library()}, malloc tuning {os.environ.get('DLF_MALLOC_TUNING', '1') != '0'}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}; matmul peak now: "
          f"fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s", flush=True)
    common = {"steps": args.steps, "warmup": args.warmup, "threads": args.threads, "data": str(folder),
              "loader": args.loader, "eval_rows": args.eval_rows, "compile": args.compile, "fuxictr_zoo": fuxictr,
              "rows": rows, "max_cardinality": args.max_cardinality, "set": overrides,
              "embedding_optimizer": args.embedding_optimizer, "device": args.device}
    if args.interleave:
        rounds = []
        for precision in precisions:
            for batch_size in batch_sizes:
                rounds.append(run_child({**common, "models": args.models, "precision": precision,
                                         "batch_size": batch_size}))
                print_interleaved(rounds[-1])
                write_json(args.json, {"peaks_gflops": peaks, "interleaved": rounds})
        return
    results = []
    # models innermost: the runs a ratio compares are adjacent in time (this machine's speed drifts over minutes)
    for precision in precisions:
        for batch_size in batch_sizes:
            for model in args.models:
                job = {**common, "model": model, "precision": precision, "batch_size": batch_size}
                r = run_child(job)
                results.append(r)
                print(f"  {model} {precision} batch {batch_size}: "
                      + (f"{r['samples_per_s']:.0f} samples/s, peak RSS {r['peak_rss_gb']:.2f} GB"
                         if "error" not in r else f"failed: {r['error']}"), flush=True)
                write_json(args.json, {"peaks_gflops": peaks, "results": results})
    print()
    print(f"data: {rows:,} rows, {results[0].get('embedding_rows', 0):,} embedding rows; "
          f"{args.steps} timed steps after {args.warmup} warm-up; step split = share of the mean step")
    print_table(results, peaks)


if __name__ == "__main__":
    main()

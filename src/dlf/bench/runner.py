"""`dlf bench`: models x datasets x seeds through `dlf.train`, each run in its own directory.

A bench is described by a spec (YAML or flags):

    config: configs/base.yaml        # optional base config for every run (model/data/train sections)
    seeds: [1, 2, 3]                 # train.seed of each repetition (data and split stay fixed)
    datasets:                        # "synthetic" or a folder written by `dlf preprocess`
      synthetic: {set: {data.synthetic.rows: 100000}}
      synthetic-noisy: {synthetic: true, set: {data.synthetic.noise: 1.0}}   # more built-in data, named
      frappe: {path: data/frappe}
    models:                          # variant name -> registered model + overrides
      dlf: {}
      dlf-no-alpha: {model: dlf, set: {model.alpha: false}}
    set: {train.epochs: 5, model.embedding_dim: 16}   # for every run
    search: {grid: {train.lr: [0.001, 0.0003]}, trials: 2}   # optional, equal budget per model

Override precedence (lowest first): base config, bench defaults (no progress bar, no TensorBoard, one
checkpoint), `set`, the dataset's `set`, the variant's `set`, the search's chosen values, `--set` flags,
the seed, model and dataset of the run (DECIDED_BY_BENCH: refused in any `set`). Common (base config,
`set`, a dataset's `set`, `--set`, search grid) `model.KEY` values apply only to models whose config has
KEY (so `model.embedding_dim: 16` can be given once for a zoo that includes LR); the skipped keys are
listed in the report; a KEY no registered model has stops the bench. A variant's own `set` is strict:
a wrong key fails that variant's runs. Data settings (data.synthetic.*) are refused in a variant's `set` and the
grid: every variant of a dataset trains on the same data (one table, one oracle row); two data settings are two
datasets (`synthetic: true` makes any dataset name the built-in data).

Layout of the bench folder OUT:
    bench.yaml                           the resolved spec (`dlf bench --out OUT` alone reuses it)
    runs/DATASET/VARIANT/seed-S/         one `dlf train` run directory each
    search/DATASET/VARIANT/trial-K/      hyper-parameter search trials (with `search`)
    report.md, results.csv, summary.json, bench.png

Resume: a run whose metrics.json exists (and whose config.yaml matches the planned config) is not
run again; a run that was interrupted (config.yaml but no metrics.json) continues from its newest
checkpoint (`dlf.train(resume=...)`); a failed run (error.json) is retried. A run directory whose
config differs from the plan (the spec changed) is moved aside to `seed-S.stale-N` and run afresh.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import random
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from rich.console import Console
from rich.markup import escape

from dlf._io import atomic_write_json, atomic_write_text, publish_dir
from dlf.data.schema import yaml_problem

BENCH_DEFAULTS = {"train.progress": False, "train.tensorboard": False, "train.keep_checkpoints": 1}
# keys every run gets from the bench: a value given for them in a `set`, `--set` or the grid would be replaced
DECIDED_BY_BENCH = {"train.seed": "its seeds (seeds: or --seeds)",
                    "model.name": "its variants' models (models: {VARIANT: {model: NAME}})",
                    "data.dataset": "its datasets (datasets: or --datasets)",
                    "data.path": "its datasets (datasets: or --datasets)"}
IGNORED_FOR_MATCH = ("progress", "tensorboard", "log_every_steps", "keep_checkpoints", "grad_norm_every_steps",
                     "threads")


class BenchError(ValueError):
    """A bad bench spec (unknown model, malformed YAML...): raised before anything runs."""


@dataclass
class Variant:
    name: str
    model: str
    set: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetSpec:
    name: str
    path: str | None = None  # None: the built-in synthetic data (`synthetic: true` in the spec, or the name)
    set: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchSpec:
    grid: dict[str, list]
    trials: int = 0  # 0: the whole grid; else this many points drawn from it (same draw for every model)
    seed: int | None = None  # train.seed of the trials (default: the first bench seed)
    sample_seed: int = 0

    def __post_init__(self) -> None:
        if "train.monitor" in self.grid:  # the trials are ranked on it: AUC against -logloss picked AUC every time
            raise BenchError("search.grid: train.monitor: the trials are ranked on the monitor, so they must share "
                             "one; give it in set or --set")

    def seed_or(self, default: int) -> int:
        return default if self.seed is None else self.seed


@dataclass
class BenchSpec:
    models: list[Variant]
    datasets: list[DatasetSpec] = field(default_factory=lambda: [DatasetSpec("synthetic")])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    set: dict[str, Any] = field(default_factory=dict)
    config: str | None = None
    search: SearchSpec | None = None
    out: str | None = None

    def to_dict(self) -> dict:
        d = {"config": self.config, "seeds": list(self.seeds),
             "datasets": {ds.name: {k: v for k, v in (("synthetic", ds.path is None and ds.name != "synthetic"),
                                                      ("path", ds.path), ("set", ds.set)) if v}
                          for ds in self.datasets},
             "models": {v.name: {"model": v.model, **({"set": v.set} if v.set else {})} for v in self.models},
             "set": self.set}
        if self.search is not None:
            d["search"] = dataclasses.asdict(self.search)
        if self.out:
            d["out"] = self.out
        return {k: v for k, v in d.items() if v not in (None, {})}


# ---------------------------------------------------------------- spec parsing

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def flatten(values: Any, where: str, prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1}, 'model.layers': 2} -> {'train.lr': 1, 'model.layers': 2}."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise BenchError(f"{where}: expected a mapping of dotted keys to values, got {values!r}")
    out = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, where, dotted + "."))
        else:
            out[dotted] = value
    return out


def parse_sets(items: list[str], where: str = "--set") -> dict[str, Any]:
    """['train.lr=0.01', 'model.hidden_units=[8,8]'] -> {'train.lr': 0.01, ...} (values read as YAML)."""
    out = {}
    for text in items:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"{where} {text!r} must look like key.path=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out[key.strip()] = value
    return out


def _check_folder_name(where: str, name: str, what: str) -> None:
    if "/" in name or name.startswith("."):  # '..' or 'a/b' would put its runs outside OUT/runs/
        raise BenchError(f"{where}: a {what} name is a folder name; no '/' or leading '.'")


def _known_models() -> list[str]:
    from dlf.models import available_models
    return available_models()


def _parse_models(raw: Any) -> list[Variant]:
    known = _known_models()
    if isinstance(raw, str):
        raw = [m for m in raw.split(",") if m.strip()]
    if isinstance(raw, list):
        raw = {str(m).strip(): {} for m in raw}
    if not isinstance(raw, dict) or not raw:
        raise BenchError("models: give a list of model names or a mapping of variant names to "
                         "{model: NAME, set: {...}}")
    variants = []
    for name, body in raw.items():
        body = {} if body is None else body
        if not isinstance(body, dict) or set(body) - {"model", "set"}:
            raise BenchError(f"models.{name}: expected {{model: NAME, set: {{key: value}}}}, got {body!r}")
        model = body.get("model", name)
        if model not in known:
            raise BenchError(f"models.{name}: unknown model {model!r}; available: {', '.join(known)}")
        _check_folder_name(f"models.{name}", str(name), "variant")
        variants.append(Variant(str(name), model, flatten(body.get("set"), f"models.{name}.set")))
    return variants


def _dataset_name(path: str) -> str:
    return Path(path).resolve().name or "data"


def _parse_datasets(raw: Any, check_data: bool = True) -> list[DatasetSpec]:
    if isinstance(raw, str):
        raw = [d for d in raw.split(",") if d.strip()]
    if isinstance(raw, list):
        out = []
        for item in raw:
            item = str(item).strip()
            out.append(DatasetSpec("synthetic") if item == "synthetic" else DatasetSpec(_dataset_name(item), item))
        raw_out = out
    elif isinstance(raw, dict):
        raw_out = []
        for name, body in raw.items():
            body = {} if body is None else body
            if not isinstance(body, dict) or set(body) - {"path", "synthetic", "set"}:
                raise BenchError(f"datasets.{name}: expected {{path: DIR, set: {{key: value}}}} or "
                                 f"{{synthetic: true, set: {{key: value}}}}, got {body!r}")
            _check_folder_name(f"datasets.{name}", str(name), "dataset")
            path = body.get("path")
            synthetic = body.get("synthetic", name == "synthetic" and path is None)
            if not isinstance(synthetic, bool):
                raise BenchError(f"datasets.{name}.synthetic: expected true or false, got {synthetic!r}")
            if synthetic and path is not None:
                raise BenchError(f"datasets.{name}: synthetic: true is the built-in data, which has no path; "
                                 f"drop one of synthetic and path ({path})")
            if path is None and not synthetic:
                raise BenchError(f"datasets.{name}: needs path (a folder written by dlf preprocess), or "
                                 "synthetic: true for the built-in synthetic data")
            raw_out.append(DatasetSpec(str(name), None if path is None else str(path),
                                       flatten(body.get("set"), f"datasets.{name}.set")))
    else:
        raise BenchError(f"datasets: expected a list or a mapping, got {raw!r}")
    if not raw_out:
        raise BenchError("datasets: empty")
    names = [d.name for d in raw_out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BenchError(f"datasets: two datasets are named {dupes[0]!r}; use the mapping form to name them")
    for d in raw_out:
        if d.path is not None:
            d.path = str(Path(d.path).expanduser())  # ~ in a YAML spec, where no shell expands it (as dlf.train)
        if check_data and d.path is not None and not (Path(d.path) / "feature_map.json").is_file():
            raise BenchError(f"datasets.{d.name}: {d.path} is not a processed dataset (no feature_map.json); "
                             "run dlf preprocess first")
    return raw_out


def _parse_seeds(raw: Any) -> list[int]:
    if isinstance(raw, str):
        raw = [s for s in raw.split(",") if s.strip()]
    if _is_int(raw):
        raw = [raw]
    try:  # '2' from --seeds 2, never 1.5 or true (int() made them seed 1 without a word)
        if not isinstance(raw, list) or not all(_is_int(s) or isinstance(s, str) for s in raw):
            raise TypeError
        seeds = [int(s) for s in raw]
    except (TypeError, ValueError):
        raise BenchError(f"seeds: expected a list of integers, got {raw!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise BenchError(f"seeds: expected distinct integers, got {raw!r}")
    return seeds


def _parse_search(raw: Any) -> SearchSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"grid", "trials", "seed", "sample_seed"}:
        raise BenchError(f"search: expected {{grid: {{key: [values]}}, trials: N, seed: S}}, got {raw!r}")
    grid = flatten(raw.get("grid"), "search.grid")
    if not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise BenchError("search.grid: give each key a non-empty list of values")
    trials = raw.get("trials", 0)
    if not _is_int(trials) or trials < 0:
        raise BenchError(f"search.trials: expected an integer >= 0, got {trials!r}")
    for key in ("seed", "sample_seed"):
        if raw.get(key) is not None and not _is_int(raw[key]):
            raise BenchError(f"search.{key}: expected an integer, got {raw[key]!r}")
    return SearchSpec(grid, trials, raw.get("seed"), raw.get("sample_seed") or 0)


def spec_from_dict(raw: dict, where: str = "bench spec", check_data: bool = True) -> BenchSpec:
    """check_data: refuse a dataset folder without feature_map.json (off for --report-only, which reads only the
    run folders: the data of a finished bench may have been moved since)."""
    if not isinstance(raw, dict):
        raise BenchError(f"{where}: expected a mapping with models, datasets, seeds, ...")
    unknown = set(raw) - {"models", "datasets", "seeds", "set", "config", "search", "out", "cli_set"}
    if unknown:
        raise BenchError(f"{where}: unknown key(s) {sorted(unknown)}; valid: models, datasets, seeds, set, config, "
                         "search, out")
    if "models" not in raw:
        raise BenchError(f"{where}: no models")
    config, out = raw.get("config"), raw.get("out")
    if config is not None and not isinstance(config, str):
        raise BenchError(f"config: expected the path of a run config file, got {config!r}")
    if config is not None and not Path(config).is_file():
        raise BenchError(f"config: {config} does not exist")
    if out is not None and not isinstance(out, str):
        raise BenchError(f"out: expected a folder path, got {out!r}")
    return BenchSpec(models=_parse_models(raw["models"]),
                     datasets=_parse_datasets(raw.get("datasets", ["synthetic"]), check_data),
                     seeds=_parse_seeds(raw.get("seeds", [1, 2, 3])),
                     set=flatten(raw.get("set"), "set"),
                     config=config, search=_parse_search(raw.get("search")), out=out)


def load_spec(path: str | Path | None = None, *, models: str | None = None, datasets: str | None = None,
              seeds: str | None = None, sets: list[str] | None = None, grid: list[str] | None = None,
              trials: int | None = None, check_data: bool = True) -> BenchSpec:
    """The spec from a YAML file (optional) with command-line flags applied on top.

    models / datasets / seeds: comma-separated lists replacing the file's (a model name that is a
    variant of the file keeps its overrides); sets: extra `key=value` overrides for every run;
    grid: `key=v1,v2,...` search grid entries; trials: the search budget per model; check_data: as spec_from_dict.
    """
    raw: dict = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise BenchError(f"bench file {str(path)!r} does not exist") from None
        except yaml.YAMLError as exc:
            raise BenchError(f"bench file {str(path)!r} is not valid YAML: {yaml_problem(exc)}") from None
        if not isinstance(raw, dict):
            raise BenchError(f"bench file {str(path)!r} must hold a mapping (models, datasets, seeds, ...)")
    if models is not None:  # (an empty --models, --datasets or --seeds is an error, not the file's lists)
        chosen = [m.strip() for m in models.split(",") if m.strip()]
        file_models = raw.get("models") or {}
        if isinstance(file_models, list):
            file_models = {m: {} for m in file_models}
        raw["models"] = {m: file_models.get(m, {}) if isinstance(file_models, dict) else {} for m in chosen}
    if datasets is not None:
        chosen = [d.strip() for d in datasets.split(",") if d.strip()]
        file_ds = raw.get("datasets") if isinstance(raw.get("datasets"), dict) else {}
        # a folder given by path is the file's dataset with that path, if there is one (its name and `set` kept);
        # else the file's processed dataset of the folder's name, found elsewhere (its `set` kept, the path given:
        # `--datasets data/frappe` with a file's frappe at runs/data/frappe dropped its settings without a word)
        by_path = {Path(str(body["path"])).expanduser().resolve(): name for name, body in file_ds.items()
                   if isinstance(body, dict) and body.get("path")}
        named, given = {}, {}
        for d in chosen:
            name = d if d in file_ds else by_path.get(Path(d).expanduser().resolve())
            same_name = file_ds.get(_dataset_name(d))
            if name is not None:
                body = file_ds[name]
            elif isinstance(same_name, dict) and same_name.get("path"):
                name, body = _dataset_name(d), {**same_name, "path": d}
            elif d == "synthetic":
                name, body = d, {}
            else:
                name, body = _dataset_name(d), {"path": d}
            # two folders of one name (a/criteo, b/criteo, or a folder named synthetic) would be one dataset: the
            # last one replaced the others without a word
            data = body.get("path") if isinstance(body, dict) else None
            data = None if data is None else Path(str(data)).expanduser().resolve()
            if name in named and given[name][1] != data:
                raise BenchError(f"--datasets: {given[name][0]} and {d} are both named {name!r} (the folder name); "
                                 "name them in a bench file: datasets: {NAME: {path: DIR}}")
            named[name], given[name] = body, (d, data)
        raw["datasets"] = named
    if seeds is not None:
        raw["seeds"] = seeds
    spec = spec_from_dict(raw, str(path) if path else "bench flags", check_data)
    if sets:
        spec.set = {**spec.set, **parse_sets(sets)}
    if grid or trials is not None:
        g = dict(spec.search.grid) if spec.search else {}
        for item in grid or []:
            key, sep, values = item.partition("=")
            if not sep or not key.strip() or not values.strip():
                raise BenchError(f"--grid {item!r} must look like key.path=v1,v2,...")
            try:  # one YAML flow sequence, so that a value may be a list: model.hidden_units=[8,8],[16]
                g[key.strip()] = yaml.safe_load(f"[{values}]")
            except yaml.YAMLError as exc:
                raise BenchError(f"--grid {item!r}: expected comma-separated values ({yaml_problem(exc)})") from None
        if not g:
            raise BenchError("--trials needs a search grid (--grid key=v1,v2 or search.grid in the file)")
        old = spec.search or SearchSpec(g)
        spec.search = SearchSpec(g, old.trials if trials is None else trials, old.seed, old.sample_seed)
        if spec.search.trials < 0:
            raise BenchError("--trials must be >= 0")
    return spec


# ---------------------------------------------------------------- the plan

@dataclass
class PlannedRun:
    kind: str  # "run" or "trial"
    dataset: DatasetSpec
    variant: Variant
    seed: int
    run_dir: Path
    overrides: dict[str, Any]  # dotted key -> value, everything but the base config file
    skipped_keys: list[str] = field(default_factory=list)
    trial: int | None = None
    trial_params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        what = f"trial {self.trial}" if self.kind == "trial" else f"seed {self.seed}"
        return f"{self.dataset.name} / {self.variant.name} / {what}"


def model_keys(model: str) -> set[str]:
    from dlf.models import get_entry
    return {f.name for f in dataclasses.fields(get_entry(model).config_cls)}


def _any_model_keys() -> set[str]:
    """The keys of every registered model's config: a common `model.KEY` outside them is a typo, not a skip."""
    return set().union(*(model_keys(m) for m in _known_models()))


def _applicable(values: dict[str, Any], model: str) -> tuple[dict[str, Any], list[str]]:
    """Drop common `model.KEY` overrides that `model`'s config does not have but another model's has (a key that
    no model has is kept, so that building the config fails on it)."""
    keys, elsewhere = model_keys(model), _any_model_keys()
    kept, skipped = {}, []
    for k, v in values.items():
        parts = k.split(".")
        if parts[0] == "model" and len(parts) == 2 and parts[1] not in keys and parts[1] in elsewhere:
            skipped.append(k)
        else:
            kept[k] = v
    return kept, skipped


def run_overrides(spec: BenchSpec, ds: DatasetSpec, v: Variant, seed: int, cli_sets: dict[str, Any] | None = None,
                  chosen: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    common, skipped = _applicable({**BENCH_DEFAULTS, **spec.set}, v.model)
    # e.g. batch_norm on one dataset, for the models that have it
    per_dataset, skipped_ds = _applicable(ds.set, v.model)
    late, skipped2 = _applicable(cli_sets or {}, v.model)
    over = {**common, **per_dataset, **v.set, **(chosen or {}), **late, "model.name": v.model, "train.seed": seed}
    if ds.path is not None:
        over["data.path"] = str(ds.path)
        over["data.dataset"] = "processed"
    else:
        over["data.dataset"] = "synthetic"
    return over, sorted(set(skipped + skipped_ds + skipped2))


def search_points(spec: SearchSpec, model: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The trial settings for `model`: the grid over the keys that apply to it, in grid order, or
    `trials` of them drawn without replacement (the same draw for models with the same grid)."""
    grid, skipped = _applicable(spec.grid, model)
    keys = list(grid)
    points = [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))] if keys else [{}]
    if spec.trials and spec.trials < len(points):
        rng = random.Random(spec.sample_seed)
        picks = sorted(rng.sample(range(len(points)), spec.trials))
        points = [points[i] for i in picks]
    return points, skipped


def build_config(base: str | None, overrides: dict[str, Any]):
    """A RunConfig from the base YAML plus dotted overrides (raises dlf.config.ConfigError)."""
    from dlf.config import ConfigError, from_dict

    raw: dict = {}
    if base is not None:
        try:
            raw = yaml.safe_load(Path(base).read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(base)!r} is not valid YAML: {yaml_problem(exc)}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {str(base)!r} must hold a mapping with model/data/train sections")
        model = overrides.get("model.name")
        if model is not None and isinstance(raw.get("model"), dict):  # the base is common: keep the keys that apply
            kept = _applicable({f"model.{k}": v for k, v in raw["model"].items() if k != "name"}, model)[0]
            raw["model"] = {k.removeprefix("model."): v for k, v in kept.items()}
    for key, value in overrides.items():
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part!r} is a value, not a section")
        node[parts[-1]] = value
    return from_dict(raw)


# ---------------------------------------------------------------- running

def _comparable(config: dict) -> dict:
    d = json.loads(json.dumps(config))
    for key in IGNORED_FOR_MATCH:
        d.get("train", {}).pop(key, None)
    data = d.get("data") or {}
    # dlf.train stores the path absolute, ~ expanded; the plan has it as the spec gave it (often relative)
    if data.get("path"):
        data["path"] = str(Path(data["path"]).expanduser().resolve())
    if data.get("dataset") == "processed":  # unread there: --set data.synthetic.rows=N must not rerun real-data runs
        data.pop("synthetic", None)
    return d


def _holds_another_config(run: PlannedRun, cfg) -> bool:
    """The run's folder holds a run (config.yaml) of another config than the planned `cfg`: the spec changed."""
    path = run.run_dir / "config.yaml"
    if not path.is_file():
        return False
    try:
        held = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:  # cut short: was a ParserError traceback
        raise BenchError(f"{path}: not readable ({yaml_problem(exc)}); delete its run folder to run it again") from None
    return _comparable(held) != _comparable(cfg.to_dict())


def _read_json(path: Path) -> dict:
    """A run's metrics.json or error.json; one line naming it when it cannot be read (cut short by a copy, a full
    disk): was a JSONDecodeError traceback that stopped the bench, its dry run and --report-only."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"{path}: not readable ({exc}); delete its run folder to run it again") from None


def run_state(run_dir: Path) -> str:
    """done | failed | partial | new."""
    if (run_dir / "metrics.json").is_file():
        return "done"
    if (run_dir / "error.json").is_file():
        return "failed"
    if (run_dir / "config.yaml").is_file():
        return "partial"
    return "new"


def _planned_state(run: PlannedRun, base: str | None) -> str:
    """run_state, or 'stale' when the folder holds a run of another config than the plan's (the spec changed since:
    running the plan moves it aside)."""
    state = run_state(run.run_dir)
    if (run.run_dir / "config.yaml").is_file():
        try:
            planned = build_config(base, run.overrides)
        except (ValueError, OSError):  # the planned config is invalid now: what is on disk is not its run
            return "stale"
        return "stale" if _holds_another_config(run, planned) else state
    return state


def _move_aside(run_dir: Path) -> Path:
    for i in itertools.count(1):
        target = run_dir.with_name(f"{run_dir.name}.stale-{i}")
        if not target.exists():
            run_dir.rename(target)
            return target
    raise AssertionError


def _copy_run(src: Path, run_dir: Path) -> None:
    """Copy a finished run (the chosen trial) to `run_dir` through a hidden sibling renamed into place: a copy cut
    short (Ctrl-C) must not leave a run that counts as done without its weights."""
    tmp = run_dir.with_name(f".{run_dir.name}.copy")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("checkpoints", "error.json"))
        publish_dir(tmp, run_dir)
    except BaseException:  # Ctrl-C, SIGTERM or a failed rename: leave no hidden half copy behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_error(run_dir: Path, exc: BaseException, stage: str) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, ValueError) and type(exc).__name__ not in ("ConfigError", "TrainingError"):
        message = f"{type(exc).__name__}: {message}"
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "error.json", {"stage": stage, "type": type(exc).__name__, "error": message,
                                               "traceback": traceback.format_exc()})
    return message


def execute(run: PlannedRun, base: str | None, console: Console, train_fn: Callable | None = None) -> dict:
    """Run (or skip, or resume) one planned run; never raises except KeyboardInterrupt (and BenchError for a
    finished run whose metrics.json cannot be read).

    Returns {'status': 'done'|'skipped'|'failed', 'error': str|None, 'metrics': dict|None, 'seconds': float}.
    """
    import dlf
    from dlf.config import ConfigError

    train_fn = train_fn or dlf.train
    started = time.perf_counter()
    try:
        cfg = build_config(base, run.overrides)
    except (ConfigError, ValueError, OSError) as exc:
        return {"status": "failed", "error": _write_error(run.run_dir, exc, "config"), "metrics": None,
                "seconds": 0.0}
    state = run_state(run.run_dir)
    if state != "new" and _holds_another_config(run, cfg):
        moved = _move_aside(run.run_dir)
        console.print(f"  {run.label}: the planned config differs from the one in {run.run_dir}; "
                      f"moved the old run to {moved.name}", markup=False, highlight=False)
        state = "new"
    if state == "done":
        return {"status": "skipped", "error": None, "seconds": 0.0,
                "metrics": _read_json(run.run_dir / "metrics.json")}
    (run.run_dir / "error.json").unlink(missing_ok=True)
    quiet = Console(quiet=True)
    try:
        if state in ("partial", "failed") and (run.run_dir / "config.yaml").is_file():
            metrics = train_fn(cfg, resume=run.run_dir, console=quiet)
        else:
            if run.run_dir.exists() and any(run.run_dir.iterdir()):
                shutil.rmtree(run.run_dir)  # leftovers of a run that failed before writing its config
            metrics = train_fn(cfg, out=run.run_dir, console=quiet)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001  (a failed run is reported, the bench goes on)
        return {"status": "failed", "error": _write_error(run.run_dir, exc, "train"), "metrics": None,
                "seconds": time.perf_counter() - started}
    return {"status": "done", "error": None, "metrics": metrics, "seconds": time.perf_counter() - started}


def _trial_score(metrics: dict, monitor: str) -> float | None:
    """The validation value the trial is selected on: the monitor at the best evaluation."""
    from dlf.train.trainer import monitor_value

    best = [r for r in metrics.get("history", []) if r.get("best")]
    if not best:
        return None
    r = best[-1]
    return monitor_value({"auc": r["val_auc"], "logloss": r["val_logloss"]}, monitor)


@dataclass
class BenchResult:
    out: Path
    records: list[dict]  # one per planned run and trial: dataset, variant, model, seed, status, error, metrics...
    selections: dict  # (dataset, variant) -> {'params', 'score', 'trials'}
    report: Path | None = None
    no_chart: str | None = None  # why there is no bench.png
    interrupted: bool = False

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if r["status"] == "failed"]


def _record(run: PlannedRun, outcome: dict | None) -> dict:
    outcome = outcome or {"status": "pending", "error": None, "metrics": None, "seconds": 0.0}
    return {"kind": run.kind, "dataset": run.dataset.name, "variant": run.variant.name, "model": run.variant.model,
            "seed": run.seed, "trial": run.trial, "trial_params": run.trial_params, "run_dir": str(run.run_dir),
            "skipped_keys": run.skipped_keys, **outcome}


def _check_no_value_is_replaced(spec: BenchSpec, cli_sets: dict) -> None:
    """Refuse a value the bench would replace without a word: --set train.seed=7 (the runs used the bench's seeds
    while the report listed train.seed=7), a --set of a grid key (every trial would train with the same value)."""
    given = [("--set", cli_sets), ("set", spec.set), *((f"datasets.{d.name}.set", d.set) for d in spec.datasets),
             *((f"models.{v.name}.set", v.set) for v in spec.models),
             *([("search.grid", spec.search.grid)] if spec.search is not None else [])]
    for where, values in given:
        for key in values:
            if key in DECIDED_BY_BENCH:
                raise BenchError(f"{where}: {key}: set by the bench itself, from {DECIDED_BY_BENCH[key]}")
    both = sorted(set(cli_sets) & set(spec.search.grid)) if spec.search is not None else []
    if both:
        raise BenchError(f"--set {both[0]} would replace the search grid's values in every trial; drop one of them")


def _check_the_data_are_the_datasets(spec: BenchSpec) -> None:
    """Refuse data settings in a variant's `set` or the search grid: the variants of a dataset are compared on the
    same data, under one oracle row (a variant with data.synthetic.noise=1 trained on other data than the rest of
    its table, and the oracle shown was that of the first variant's data)."""
    given = [*((f"models.{v.name}.set", v.set) for v in spec.models),
             *([("search.grid", spec.search.grid)] if spec.search is not None else [])]
    for where, values in given:
        for key in values:
            if key.startswith("data."):
                raise BenchError(f"{where}: {key}: every variant of a dataset trains on the same data; give data "
                                 "settings in the dataset's set (datasets: {NAME: {set: {...}}}), in set or --set; "
                                 "to compare synthetic data settings, declare one dataset per setting "
                                 "(datasets: {NAME: {synthetic: true, set: {...}}})")


def _check_some_run_can_start(spec: BenchSpec, cli_sets: dict | None) -> None:
    """Refuse the bench up front when no planned run has a valid config (a typo in `set` or `--set` such as
    train.epochs=abc): each run would fail at its config stage, one after the other, and leave error.json files.
    A config error of some variants only stays theirs (a variant's own `set` is strict: its runs fail)."""
    from dlf.config import ConfigError

    first = None
    for ds in spec.datasets:
        for v in spec.models:
            points = search_points(spec.search, v.model)[0] if spec.search is not None else [{}]
            over, _ = run_overrides(spec, ds, v, spec.seeds[0], cli_sets, points[0])
            try:
                build_config(spec.config, over)
                return
            except (ConfigError, ValueError, OSError) as exc:
                first = first or f"{ds.name} / {v.name}: {str(exc).strip().splitlines()[0]}"
    raise BenchError(f"no run of this bench has a valid config, nothing was run; first: {first}")


def _check_every_grid_value_is_valid(spec: BenchSpec, cli_sets: dict | None) -> None:
    """Refuse a grid value that no variant accepts (--grid train.lr=0.01,abc): its trials failed one by one in every
    model and the search went on with fewer trials than asked for, each model selecting among the rest."""
    from dlf.bench.report import yaml_text
    from dlf.config import ConfigError

    ds = spec.datasets[0]
    for key, values in (spec.search.grid.items() if spec.search is not None else ()):
        users = [v for v in spec.models if key in _applicable({key: None}, v.model)[0]]
        for value in values:
            first = None
            for v in users:
                try:
                    build_config(spec.config, run_overrides(spec, ds, v, spec.seeds[0], cli_sets, {key: value})[0])
                    break
                except (ConfigError, ValueError, OSError) as exc:
                    first = first or f"{v.name}: {str(exc).strip().splitlines()[0]}"
            else:
                if first is not None:
                    raise BenchError(f"search.grid: {key}={yaml_text(value)}: no variant accepts it, nothing was run; "
                                     f"first: {first}")


def run_bench(spec: BenchSpec, out: str | Path, *, console: Console | None = None, cli_sets: dict | None = None,
              dry_run: bool = False, report_only: bool = False, train_fn: Callable | None = None) -> BenchResult:
    """Run every planned run not yet done, then write the report; returns what happened to each run.

    cli_sets: overrides that win over the spec's and the variants' (the `--set` flags).
    report_only: run nothing; report what is on disk. train_fn: stand-in for dlf.train (tests).
    """
    from dlf.bench.report import show, write_report, yaml_text

    console = console or Console(soft_wrap=True)
    out = Path(out)
    _check_no_value_is_replaced(spec, cli_sets or {})
    _check_the_data_are_the_datasets(spec)
    if not report_only:
        _check_some_run_can_start(spec, cli_sets)
        _check_every_grid_value_is_valid(spec, cli_sets)
    elif not out.is_dir():
        raise BenchError(f"{out} is no bench folder: nothing to report")
    if not (dry_run or report_only):  # --report-only keeps the saved spec (the next `--out DIR` alone resumes it)
        try:
            out.mkdir(parents=True, exist_ok=True)
            saved = spec.to_dict()
            # absolute: `dlf bench --out DIR` alone is run from any folder, and a relative path would name another
            # dataset there (--report-only then listed every finished run on it as not run yet)
            for body in saved.get("datasets", {}).values():
                if body.get("path"):
                    body["path"] = str(Path(body["path"]).expanduser().resolve())
            if saved.get("config"):
                saved["config"] = str(Path(saved["config"]).resolve())
            atomic_write_text(out / "bench.yaml", yaml.safe_dump({**saved, **({"cli_set": cli_sets}
                                                                              if cli_sets else {})}, sort_keys=False))
        except OSError as exc:  # a file in the path, no permission: was a NotADirectoryError traceback
            raise BenchError(f"{out}: cannot write the bench folder: {exc.strerror or exc}"
                             + (f": {exc.filename}" if exc.filename else "")) from None
    records: list[dict] = []
    selections: dict = {}
    total = len(spec.datasets) * len(spec.models) * len(spec.seeds)
    if spec.search is not None:
        total += len(spec.datasets) * sum(len(search_points(spec.search, v.model)[0]) for v in spec.models)
    count = [0]
    interrupted = [False]  # after Ctrl-C the rest of the plan is only read from disk (pending runs reported)

    def stop(run: PlannedRun) -> None:
        interrupted[0] = True
        console.print(f"[yellow]interrupted[/yellow] during {escape(run.label)}: rerun the same command to resume "
                      "(finished runs are kept, this one continues from its last checkpoint)", highlight=False)

    def go(run: PlannedRun) -> dict:
        if dry_run:
            state = _planned_state(run, spec.config)
            settings = " ".join(f"{k}={yaml_text(v)}" for k, v in run.overrides.items() if k not in BENCH_DEFAULTS)
            console.print(f"  {run.label}: "
                          + ("another config on disk (moved aside and run again)" if state == "stale" else state)
                          + f"; {settings}", markup=False, highlight=False)
            # a finished trial's metrics: the search selects from them, and its seed runs are shown with the choice
            metrics = _read_json(run.run_dir / "metrics.json") if state == "done" else None
            return _record(run, {"status": "planned", "error": None, "metrics": metrics, "seconds": 0.0})
        if report_only or interrupted[0]:
            state = _planned_state(run, spec.config)  # a run of an earlier spec is no result of this one
            if state == "done":
                return _record(run, {"status": "skipped", "error": None, "seconds": 0.0,
                                     "metrics": _read_json(run.run_dir / "metrics.json")})
            if state == "failed":
                err = _read_json(run.run_dir / "error.json")
                return _record(run, {"status": "failed", "error": err.get("error"), "metrics": None, "seconds": 0.0})
            return _record(run, None)
        count[0] += 1
        try:
            outcome = execute(run, spec.config, console, train_fn)
        except KeyboardInterrupt:
            stop(run)
            return _record(run, None)
        rec = _record(run, outcome)
        prefix = f"[{count[0]}/{total}] {run.label}:"
        if outcome["status"] == "failed":
            console.print(f"{escape(prefix)} [red]FAILED[/red] {escape(outcome['error'])}", highlight=False)
        else:
            t = outcome["metrics"]["test"]
            what = "done before, skipped" if outcome["status"] == "skipped" else f"{outcome['seconds']:.0f} s"
            console.print(f"{prefix} test AUC {show(t['auc'])}  logloss {show(t['logloss'])}  ({what})",
                          markup=False, highlight=False)
        return rec

    for ds in spec.datasets:
        # 1. equal-budget search per variant (selection on validation), then 2. the seeds
        chosen: dict[str, dict] = {}
        chosen_dir: dict[str, Path] = {}
        searched: dict[str, bool] = {}  # every trial of the variant is done: its choice is made
        if spec.search is not None:
            trial_seed = spec.search.seed_or(spec.seeds[0])
            for v in spec.models:
                points, skipped_grid = search_points(spec.search, v.model)
                trial_records = []
                for k, params in enumerate(points, 1):
                    over, skipped = run_overrides(spec, ds, v, trial_seed, cli_sets, params)
                    run = PlannedRun("trial", ds, v, trial_seed, out / "search" / ds.name / v.name / f"trial-{k}",
                                     over, skipped, k, params)
                    rec = go(run)
                    if rec["metrics"] is not None:
                        rec["monitor"] = build_config(spec.config, over).train.monitor
                        rec["val_score"] = _trial_score(rec["metrics"], rec["monitor"])
                    records.append(rec)
                    trial_records.append(rec)
                scored = [r for r in trial_records if r.get("val_score") is not None]
                best = max(scored, key=lambda r: r["val_score"]) if scored else None
                selections[(ds.name, v.name)] = {
                    "params": best["trial_params"] if best else None, "score": best["val_score"] if best else None,
                    "monitor": best["monitor"] if best else None,
                    "trials": len(points), "completed": len(scored), "skipped_grid_keys": skipped_grid}
                chosen[v.name] = best["trial_params"] if best else None
                searched[v.name] = all(r["metrics"] is not None for r in trial_records)
                if best is not None:
                    chosen_dir[v.name] = Path(best["run_dir"])
        for seed in spec.seeds:
            for v in spec.models:
                params = chosen.get(v.name, {}) if spec.search is not None else {}
                over, skipped = run_overrides(spec, ds, v, seed, cli_sets, params or {})
                run = PlannedRun("run", ds, v, seed, out / "runs" / ds.name / v.name / f"seed-{seed}", over,
                                 skipped, trial_params=params or {})
                if spec.search is not None and params is None and not (dry_run or report_only or interrupted[0]):
                    run.run_dir.mkdir(parents=True, exist_ok=True)
                    # a ValueError: recorded as its message alone, not as a crash ("RuntimeError: ...")
                    exc = ValueError("hyper-parameter search: every trial failed, nothing to select")
                    rec = _record(run, {"status": "failed", "error": _write_error(run.run_dir, exc, "search"),
                                        "metrics": None, "seconds": 0.0})
                    console.print(f"{escape(run.label)}: [red]FAILED[/red] {escape(rec['error'])}", highlight=False)
                elif dry_run and spec.search is not None and not searched[v.name]:
                    console.print(f"  {run.label}: after the search (with the settings of the trial it chooses)",
                                  markup=False, highlight=False)
                    rec = _record(run, {"status": "planned", "error": None, "metrics": None, "seconds": 0.0})
                else:
                    trial_dir = chosen_dir.get(v.name)
                    if (trial_dir is not None and seed == spec.search.seed_or(spec.seeds[0]) and not dry_run
                            and not report_only and not interrupted[0] and run_state(run.run_dir) == "new"):
                        # the chosen trial is this very run (same config and seed): reuse it (not after Ctrl-C:
                        # the best of the trials done so far is no selection)
                        try:
                            _copy_run(trial_dir, run.run_dir)
                        except KeyboardInterrupt:
                            stop(run)
                    rec = go(run)
                records.append(rec)
    result = BenchResult(out, records, selections, interrupted=interrupted[0])
    if not dry_run:
        result.report, result.no_chart = write_report(result, spec, cli_sets or {})
    return result

"""Model bundles: one self-contained folder with everything needed to score raw rows.

    BUNDLE/bundle.json         manifest: format + format_version, dlf/torch versions, model name and
                               config, preprocessing mode and input columns, where it came from,
                               the SHA-256 and size of every other file (written last)
    BUNDLE/model.safetensors   the run's final (best) weights
    BUNDLE/feature_map.json    the FeatureMap the model was built from; its meta holds the
                               preprocessing schema and per-field transforms (mean/std, buckets,
                               missing ids, separators, max_len)
    BUNDLE/vocab/<field>.arrow vocabulary values in id order (Arrow IPC), as `dlf preprocess` wrote them
    BUNDLE/model.onnx          (only with --format onnx) the whole model, ids/values -> probability

`export_bundle` writes it to a hidden temporary sibling and renames it into place when complete.
`load_bundle` reads only JSON (json), safetensors and Arrow IPC files and, for the ONNX engine,
hands model.onnx to ONNX Runtime: nothing in a bundle is ever unpickled or executed as Python.
Every file is checked against the manifest's SHA-256 before it is read.

A run trained on the built-in synthetic data has no raw values (its inputs are generated ids),
so its bundle is in `ids` mode: it takes encoded ids / numeric values as input (see
dlf.serve.encoding). Runs trained with `dlf train --data DIR` give `raw` bundles.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from dlf._io import json_safe, publish_dir, remove_dead_siblings
from dlf.data.features import FeatureMap
from dlf.data.presets import LIBFM_LAYOUT, LibfmLayout
from dlf.data.schema import DataError, yaml_problem

BUNDLE_FORMAT = "dlf-bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST = "bundle.json"
WEIGHTS = "model.safetensors"
FEATURE_MAP = "feature_map.json"
ONNX_FILE = "model.onnx"
MAX_JSON_BYTES = 256 << 20


class BundleError(ValueError):
    """A bundle (or the run it is exported from) cannot be used; the message names the file."""


def _dlf_version() -> str:
    from dlf import __version__
    return __version__


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_json(path: Path, what: str) -> dict:
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise BundleError(f"{path}: {what} is larger than {MAX_JSON_BYTES >> 20} MiB")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: no such file ({what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: {what} is not valid JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: {what} must be a JSON object")
    return data


# ---- export -------------------------------------------------------------------------------------

def _find_dataset(run: Path, cfg_path: str | None, override: str | Path | None) -> Path:
    if override is not None:
        return Path(override)
    if not cfg_path:
        raise BundleError(f"{run / 'config.yaml'}: data.path is not set; pass --data DIR (the folder written by "
                          "dlf preprocess)")
    p = Path(cfg_path)
    for cand in ([p] if p.is_absolute() else [p, run.parent / p, run / p]):
        if (cand / FEATURE_MAP).is_file():
            return cand
    raise BundleError(f"the run's dataset {cfg_path!r} (data.path in {run / 'config.yaml'}) is not found from here; "
                      "pass --data DIR (the folder written by dlf preprocess)")


def _vocab_fields(fm: FeatureMap) -> list[str]:
    """Fields with a vocabulary file (raw mode: categorical/multi fields that are not hashed)."""
    if not fm.meta.get("schema"):
        return []
    stats = fm.meta.get("fields", {})
    return [f.name for f in fm.fields if f.kind != "numeric" and not stats.get(f.name, {}).get("buckets")]


def read_run(run: str | Path):
    """A finished run directory's (config, feature map, model with its best weights, in eval mode); BundleError naming
    the file that is missing or does not fit. Reads config.yaml, feature_map.json and model.safetensors: nothing is
    unpickled or executed."""
    import yaml
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from dlf.config import ConfigError, from_dict

    run = Path(run).expanduser()
    if not run.is_dir():
        raise BundleError(f"{run}: no such run directory")
    for name in ("config.yaml", WEIGHTS, FEATURE_MAP):
        if not (run / name).is_file():
            hint = " (training not finished?)" if name == WEIGHTS else ""
            raise BundleError(f"{run}: no {name}{hint}; not a finished dlf run directory")
    try:
        raw_cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        if not isinstance(raw_cfg, dict):
            raise ConfigError("expected a mapping with model/data/train sections")
        cfg = from_dict(raw_cfg)
    except yaml.YAMLError as exc:
        raise BundleError(f"{run / 'config.yaml'}: not valid YAML: {yaml_problem(exc)}") from None
    except (ConfigError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{run / 'config.yaml'}: {str(exc).splitlines()[0]}") from None
    try:
        fm = FeatureMap.load(run / FEATURE_MAP)
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{run / FEATURE_MAP}: unreadable feature map: {exc}") from None
    _check_feature_map(fm, run / FEATURE_MAP)
    try:
        weights = load_file(str(run / WEIGHTS))
    except (RuntimeError, OSError, ValueError, SafetensorError) as exc:  # SafetensorError: truncated or not safetensors
        raise BundleError(f"{run / WEIGHTS}: does not load into model {cfg.model_name!r}: "
                          f"{str(exc).splitlines()[0]}") from None
    return cfg, fm, _model_with(cfg, fm, weights, f"{run / WEIGHTS}: does not fit model {cfg.model_name!r}")


def load_run_model(run: str | Path):
    """The trained model of a finished run (dlf.train(out=RUN) or dlf train --out RUN): its best weights, in eval
    mode, on the CPU; it maps a dlf.data.Batch (encoded ids, as dlf.data.store.load_processed's splits give them)
    to B logits."""
    return read_run(run)[2]


def export_bundle(run: str | Path, out: str | Path, *, data: str | Path | None = None, format: str = "torch",
                  force: bool = False, opset: int = 17, log=None) -> Path:
    """Write the bundle of a finished run to OUT (atomically). format: torch | onnx (adds model.onnx)."""
    import torch

    log = log or (lambda msg: None)
    if format not in ("torch", "onnx"):
        raise BundleError(f"--format must be torch or onnx, got {format!r}")
    # the weights must load into the model the config describes
    cfg, fm, model = read_run(run)
    run, out = Path(run).expanduser(), Path(out)
    mode = "raw" if fm.meta.get("schema") else "ids"
    vocab_src: dict[str, Path] = {}
    dataset = None
    if mode == "raw":
        dataset = _find_dataset(run, cfg.data.path, data)
        try:
            dfm = FeatureMap.load(dataset / FEATURE_MAP)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{dataset / FEATURE_MAP}: unreadable feature map: {exc}") from None
        for key in ("schema_hash", "fingerprint"):
            if fm.meta.get(key) != dfm.meta.get(key):
                raise BundleError(f"{dataset} is not the dataset this run was trained on ({key} differs; it was "
                                  "rebuilt since?): its vocabularies would not match the model")
        for name in _vocab_fields(fm):
            path = dataset / "vocab" / f"{name}.arrow"
            if not path.is_file():
                raise BundleError(f"{path}: vocabulary of field {name!r} is missing from the dataset")
            vocab_src[name] = path
        # the dataset's: a run trained before preprocessing kept the layout gets it from the dataset rebuilt since
        if dfm.meta.get("libfm_layout"):
            if not (dataset / LIBFM_LAYOUT).is_file():
                raise BundleError(f"{dataset / LIBFM_LAYOUT}: the libFM layout (which field owns each index) is "
                                  "missing from the dataset")
            fm.meta["libfm_layout"] = LIBFM_LAYOUT
    # the encoder must build from the vocabularies the bundle will copy: fail here, before the model is built
    # and not at serving time (e.g. a dataset whose rows need a side table that a bundle does not carry)
    Bundle.encoder_from(dataset or run, fm)

    if out.exists() and not (out.is_dir() and ((out / MANIFEST).is_file() or not any(out.iterdir()))):
        raise BundleError(f"{out} exists and is not a dlf bundle; choose another --out")
    if out.exists() and (out / MANIFEST).is_file() and not force:
        raise BundleError(f"{out} already holds a bundle; pass --force to replace it")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_siblings(out)
        tmp.mkdir()
    except OSError as exc:  # a file in the path, no permission: was a FileExistsError/PermissionError traceback
        raise BundleError(f"{out}: cannot write the bundle: {exc.strerror or exc}"
                          + (f": {exc.filename}" if exc.filename else "")) from None
    try:
        shutil.copyfile(run / WEIGHTS, tmp / WEIGHTS)
        fm.save(tmp / FEATURE_MAP)
        if vocab_src:
            (tmp / "vocab").mkdir()
            for name, src in vocab_src.items():
                shutil.copyfile(src, tmp / "vocab" / f"{name}.arrow")
        if dataset is not None and fm.meta.get("libfm_layout"):
            shutil.copyfile(dataset / LIBFM_LAYOUT, tmp / LIBFM_LAYOUT)
        manifest = {
            "format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION, "dlf_version": _dlf_version(),
            "torch_version": torch.__version__.split("+")[0],
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": {"name": cfg.model_name, "config": dataclasses.asdict(cfg.model),
                      "parameters": sum(p.numel() for p in model.parameters())},
            "preprocessing": {"mode": mode, "preset": fm.meta.get("preset"), "label": fm.label},
            "training": {"precision": cfg.train.precision},  # of the run's own test metrics (test_metrics below)
            "source": {"run": str(run.resolve()), "dataset": None if dataset is None else str(dataset.resolve()),
                       "schema_hash": fm.meta.get("schema_hash"), "fingerprint": fm.meta.get("fingerprint")},
            "onnx": None,
        }
        if (run / "metrics.json").is_file():
            try:
                test = json.loads((run / "metrics.json").read_text()).get("test")
                manifest["test_metrics"] = _json_numbers(test or {})
            except (OSError, ValueError):
                pass
        if format == "onnx":
            from dlf.serve.onnx import export_onnx
            log("exporting model.onnx")
            manifest["onnx"] = export_onnx(model, fm, tmp / ONNX_FILE, opset=opset)
        manifest["files"] = {str(p.relative_to(tmp).as_posix()): {"sha256": _sha256(p), "bytes": p.stat().st_size}
                             for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        publish_dir(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):  # e.g. the disk filled up while copying
            raise BundleError(f"{out}: cannot write the bundle: {exc.strerror or exc}") from None
        raise
    return out




# ---- load -----------------------------------------------------------------------------------------

@dataclass
class Bundle:
    path: Path
    manifest: dict
    feature_map: FeatureMap
    encoder: "object"  # dlf.serve.encoding.Encoder
    model: "object"  # torch.nn.Module in eval mode

    @property
    def model_name(self) -> str:
        return self.manifest["model"]["name"]

    @property
    def mode(self) -> str:
        return self.encoder.mode

    @property
    def warnings(self) -> list[str]:
        """Why raw rows may not be encoded as preprocessing encoded the training rows: the data was preprocessed by
        another version of dlf's pipeline (PIPELINE_VERSION: e.g. Parquet bools became "1"/"0" in version 7), or a
        numeric field had no value in the training rows, so its inputs are not used (Encoder.untrained)."""
        from dlf.data.preprocess import PIPELINE_VERSION

        if self.mode != "raw":
            return []
        out = []
        made = self.feature_map.meta.get("pipeline_version")
        if made != PIPELINE_VERSION:
            out.append(f"{self.path}: the training data was preprocessed by pipeline version {made or 'before 8'}, and "
                       f"this dlf encodes raw rows by version {PIPELINE_VERSION}: a few kinds of values may be encoded "
                       "differently than in training (docs/data.md, 'Pipeline versions'); to be sure, preprocess, "
                       "train and export again")
        if self.encoder.untrained:
            names = ", ".join(repr(self.encoder.parser.num[j].name) for j in self.encoder.untrained)
            out.append(f"{self.path}: numeric field(s) {names} had no value in the training rows, so the model "
                       "learned nothing from them: they are scored as missing whatever the input holds")
        return out

    @property
    def onnx_path(self) -> Path | None:
        info = self.manifest.get("onnx")
        return self.path / ONNX_FILE if info else None

    @staticmethod
    def encoder_from(folder: Path, fm: FeatureMap, files: dict | None = None):
        from dlf.serve.encoding import Encoder

        vocabs: dict[str, pa.Array] = {}
        for name in _vocab_fields(fm):
            rel = f"vocab/{name}.arrow"
            path = _inside(folder, rel)
            if files is not None:
                _verify(folder, rel, files)
            vocabs[name] = _read_vocab(path)
        try:
            return Encoder(fm, vocabs)
        except DataError as exc:
            raise BundleError(f"{folder}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:  # a per-field statistic missing or not a number
            raise BundleError(f"{folder / FEATURE_MAP}: malformed feature map: {type(exc).__name__}: {exc}") from None

    def libfm_layout(self) -> LibfmLayout | None:
        """How libFM lines split into fields, as in preprocessing; None for a bundle of a dataset preprocessed from
        other files (or before dlf kept the layout)."""
        if not self.feature_map.meta.get("libfm_layout"):
            return None
        _verify(self.path, LIBFM_LAYOUT, self.manifest["files"])
        try:
            return LibfmLayout.load(self.path / LIBFM_LAYOUT)
        except DataError as exc:
            raise BundleError(str(exc)) from None

    def metadata(self) -> dict:
        """What a client needs to know: model, inputs, fields (for GET /metadata)."""
        stats = self.feature_map.meta.get("fields", {})
        fields = []
        for f in self.feature_map.fields:
            s = stats.get(f.name, {})
            d = {"name": f.name, "kind": f.kind, "input": s.get("source", f.name)}
            if f.kind != "numeric":
                d.update(vocab_size=f.vocab_size)
            for key in ("transform", "buckets", "has_missing", "separator", "mean", "std"):
                if key in s and s[key] not in (None, 0, "none"):
                    d[key] = s[key]
            if f.kind == "multi":
                d["max_len"] = f.max_len
            fields.append(d)
        m = self.manifest
        return {"model": m["model"], "format_version": m["format_version"], "dlf_version": m["dlf_version"],
                "created": m.get("created"), "preprocessing": m["preprocessing"],
                "inputs": [dataclasses.asdict(i) for i in self.encoder.inputs], "fields": fields,
                "label": self.feature_map.label, "test_metrics": _json_numbers(m.get("test_metrics") or {}),
                "onnx": m.get("onnx") is not None}


def _model_with(cfg, fm: FeatureMap, weights: dict, where: str):
    """The configured model with `weights` loaded, in eval mode; BundleError f"{where}: <what does not fit>" otherwise.

    The model is first built on the meta device (shapes and dtypes, no memory) and compared with the weights: a feature
    map edited to claim a huge vocabulary would otherwise allocate that table (an OOM) before any mismatch showed."""
    import torch

    from dlf.models import build_model, weights_mismatch

    with torch.device("meta"):  # (_check_feature_map made sure that the sizes are integers)
        skeleton = build_model(cfg.model_name, fm, cfg.model)
    if mismatch := weights_mismatch(skeleton, weights):
        raise BundleError(f"{where}: {mismatch}")
    model = build_model(cfg.model_name, fm, cfg.model)
    model.load_state_dict(weights, strict=True)
    return model.eval()  # (parameters keep requires_grad: switching it off changes some kernels' float rounding)


def _check_feature_map(fm: FeatureMap, path: Path) -> None:
    """The types the encoder and the model rely on, and multi fields' max_len as preprocessing padded; a hand-edited
    feature map (checksums recomputed) was an AttributeError/KeyError traceback when loading, a TypeError (a 500) at
    the first request, or lists cut elsewhere than in training."""
    try:
        fm.check()
    except ValueError as exc:
        raise BundleError(f"{path}: {exc}") from None
    # a multi field's max_len is where requests' lists are cut: the weights cannot tell (the model averages any
    # length), so another value than preprocessing padded to scores lists the model never saw, silently
    stats = fm.meta.get("fields", {})
    for f in fm.of_kind("multi"):
        padded = stats.get(f.name, {}).get("max_len", f.max_len)  # ids bundles (synthetic) have no statistics
        if padded != f.max_len:
            raise BundleError(f"{path}: field {f.name!r} has max_len {f.max_len!r}, but its training rows were padded "
                              f"to {padded!r} (meta.fields.{f.name}.max_len): the feature map was edited; re-export "
                              "the run")


def _json_numbers(metrics: dict) -> dict:
    """The numeric metrics, NaN/inf as null: a one-class test split has AUC NaN, which strict JSON (the server's
    answers, jq) cannot hold: GET /metadata was a 500."""
    return json_safe({k: v for k, v in metrics.items()
                      if v is None or isinstance(v, (int, float)) and not isinstance(v, bool)})


def _inside(folder: Path, rel: str) -> Path:
    """folder/rel, refusing names that leave the folder or are links."""
    path = folder / rel
    try:
        resolved = path.resolve()
        root = folder.resolve()
    except OSError as exc:
        raise BundleError(f"{path}: {exc}") from None
    if root not in resolved.parents or path.is_symlink():
        raise BundleError(f"{folder}: file name {rel!r} points outside the bundle or is a link; refusing it")
    return path


def _verify(folder: Path, rel: str, files: dict) -> None:
    path = _inside(folder, rel)
    info = files.get(rel)
    if not path.is_file():
        raise BundleError(f"{path}: missing from the bundle")
    if info is None:
        raise BundleError(f"{path}: not listed in {MANIFEST}; the bundle was modified after export")
    if path.stat().st_size != info.get("bytes") or _sha256(path) != info.get("sha256"):
        raise BundleError(f"{path}: checksum does not match {MANIFEST}; the bundle is corrupted or was modified "
                          "after export (re-export it)")


def _read_vocab(path: Path) -> pa.Array:
    import pyarrow.ipc as ipc

    try:
        with pa.memory_map(str(path)) as src:
            table = ipc.open_file(src).read_all()
        return table.column("value").combine_chunks()
    except (pa.ArrowInvalid, OSError, KeyError) as exc:
        raise BundleError(f"{path}: not a readable vocabulary (Arrow IPC with a 'value' column): "
                          f"{str(exc).splitlines()[0]}") from None


def read_manifest(path: str | Path) -> dict:
    folder = Path(path)
    if not folder.is_dir():
        raise BundleError(f"{folder}: no such bundle directory (create one with dlf export RUN --out {folder})")
    manifest = _read_json(folder / MANIFEST, "bundle manifest")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{folder / MANIFEST}: not a dlf bundle manifest (format {manifest.get('format')!r})")
    version = manifest.get("format_version")
    if version != BUNDLE_FORMAT_VERSION:
        made = manifest.get("dlf_version", "an unknown version")
        raise BundleError(f"{folder}: bundle format version {version!r} (written by dlf {made}) is not supported by "
                          f"dlf {_dlf_version()}, which reads format version {BUNDLE_FORMAT_VERSION}; re-export the "
                          "run with this dlf version")
    for key in ("model", "preprocessing", "files"):
        if not isinstance(manifest.get(key), dict):
            raise BundleError(f"{folder / MANIFEST}: missing or malformed {key!r}")
    # what load_bundle, /metadata and the server's metrics read, so that a hand-edited manifest fails here, in one line
    # (a file entry that was not an object was an AttributeError, a missing dlf_version a KeyError at `dlf serve`)
    checks = {"dlf_version": isinstance(manifest.get("dlf_version"), str),
              "model.name": isinstance(manifest["model"].get("name"), str),
              "model.config": isinstance(manifest["model"].get("config", {}), dict),
              "files": all(isinstance(v, dict) for v in manifest["files"].values())}
    bad = [key for key, ok in checks.items() if not ok]
    if bad:
        raise BundleError(f"{folder / MANIFEST}: missing or malformed {', '.join(map(repr, bad))}")
    return manifest


def load_bundle(path: str | Path, *, build_model: bool = True) -> Bundle:
    """Read and verify a bundle; never unpickles or executes anything from it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from dlf.config import ConfigError, from_dict

    folder = Path(path)
    manifest = read_manifest(folder)
    files = manifest["files"]
    _verify(folder, FEATURE_MAP, files)
    try:
        fm = FeatureMap.from_dict(_read_json(folder / FEATURE_MAP, "feature map"))
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{folder / FEATURE_MAP}: unreadable feature map: {exc}") from None
    _check_feature_map(fm, folder / FEATURE_MAP)
    encoder = Bundle.encoder_from(folder, fm, files)
    model = None
    if build_model:
        info = manifest["model"]
        try:
            cfg = from_dict({"model": {"name": info["name"], **dict(info.get("config") or {})}})
        except (ConfigError, KeyError, TypeError) as exc:
            raise BundleError(f"{folder / MANIFEST}: model config: {exc}") from None
        _verify(folder, WEIGHTS, files)
        try:
            state = load_file(str(folder / WEIGHTS))  # safetensors: tensors only, no code
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise BundleError(f"{folder / WEIGHTS}: not a valid safetensors file: {str(exc).splitlines()[0]}") from None
        model = _model_with(cfg, fm, state, f"{folder / WEIGHTS}: weights do not fit model {cfg.model_name!r}")
    if manifest.get("onnx"):
        _verify(folder, ONNX_FILE, files)
    return Bundle(folder, manifest, fm, encoder, model)

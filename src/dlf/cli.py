"""Command line: a thin layer over the Python API (`dlf.train`)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand

from dlf._runtime import interrupt_when_orphaned, restart_with_tcmalloc, sigterm_as_interrupt
from dlf.data.download import DATASETS

app = typer.Typer(add_completion=False, no_args_is_help=True)
err = Console(stderr=True)
# plain lines: they quote paths and values from the user's files, which rich would read as markup ("[/i]" raised)
say = Console(markup=False, highlight=False, soft_wrap=True).print
say_err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True).print


def _version(value: bool) -> None:
    if value:
        from dlf import __version__

        say(f"dlf {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print dlf's version and exit.")) -> None:
    """dlf: CTR prediction with DLF and baselines."""


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)  # the message quotes user data
    raise typer.Exit(2)


@app.command()
def train(
    dataset: Optional[str] = typer.Option(None, help="Dataset name (built in: synthetic)."),
    model: Optional[str] = typer.Option(None, help="Registered model name (see `dlf models`)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file with model/data/train sections."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override, e.g. --set model.layers=2 (repeatable)."),
    out: Optional[Path] = typer.Option(None, help="Run directory for config, weights and metrics."),
    quiet: bool = typer.Option(False, help="No progress bar."),
    data: Optional[Path] = typer.Option(None, "--data", help="Processed dataset folder (from `dlf preprocess`)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this directory from its newest "
                                          "valid checkpoint (uses its config.yaml; --set still applies)."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Train with N processes: runs torchrun --nproc-per-node N "
                              "(DistributedDataParallel, gloo on CPU, NCCL on GPU)."),
) -> None:
    """Train a model, evaluate it on the test split and print AUC / logloss."""
    import os

    from dlf.config import ConfigError, load_config, parse_override

    if data is not None and dataset not in (None, "processed"):
        _fail(f"--data {data} trains on that processed dataset; --dataset {dataset} conflicts with it (drop one)")
    overrides = list(set_) + (["train.progress=false"] if quiet else []) + ([f"data.path={data}"] if data else [])
    # the config is checked here, before torchrun starts processes (each would print the same error)
    try:
        if resume is not None:
            if config is not None or model is not None or dataset is not None:
                _fail("--resume continues a run with its own config.yaml: --config, --model and --dataset cannot be "
                      "given with it (--set, --data, --nproc and --quiet can)")
            if any(parse_override(text)[0] == ["model", "name"] for text in set_):
                _fail(f"--resume cannot change the model: {resume}'s checkpoints hold its model's weights; "
                      "train another model in a new run (--out)")
            run_config = resume / "config.yaml"
            if not run_config.is_file():  # here, not in every process torchrun would start
                _fail(f"cannot resume: {run_config} does not exist (not a dlf run directory?)")
            cfg = load_config(run_config, overrides)
        else:
            cfg = load_config(config, overrides, model=model, dataset=dataset)
    except ConfigError as exc:
        _fail(str(exc))
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from dlf.api import _writable_run_dir
        from dlf.train.distributed import DeviceError, resolve_device, run_torchrun
        from dlf.train.trainer import TrainingError

        try:
            resolve_device(cfg.train.device)
        except DeviceError as exc:
            _fail(str(exc))

        if cfg.train.batch_size % nproc:
            _fail(f"train.batch_size={cfg.train.batch_size} must be divisible by --nproc {nproc} (it is the global "
                  "batch; each process trains on batch_size / nproc rows per step)")
        if out is not None and resume is None:  # here: every process torchrun starts would print it
            try:
                _writable_run_dir(out)
            except TrainingError as exc:
                _fail(str(exc))
        raise typer.Exit(run_torchrun(nproc, sys.argv[1:], _interrupted(resume if resume is not None else out)))
    from dlf.api import train as run_train
    from dlf.train.checkpoint import CheckpointError
    from dlf.train.trainer import TrainingError

    # SIGTERM (`kill`, `timeout`, a scheduler's pre-emption) stops the run as Ctrl-C does: it ended it on the spot,
    # without a word, leaving a checkpoint being written as a hidden temporary file. Not under torchrun, which
    # SIGTERMs the other ranks when one died: they end as before, and torchrun's report names the signal. A rank
    # stops as on Ctrl-C once torchrun is gone (killed: the ranks run in sessions of their own)
    under_torchrun = "WORLD_SIZE" in os.environ
    # a rank ends through _exit_rank, past the interpreter's teardown (see there), whatever stopped it
    fail = (lambda message: _exit_rank(f"error: {message}", 2)) if under_torchrun else _fail
    with interrupt_when_orphaned() if under_torchrun else sigterm_as_interrupt() as terminated:
        try:
            metrics = run_train(cfg, out=out, resume=resume)
        except (ConfigError, TrainingError, CheckpointError) as exc:
            fail(str(exc))
        except OSError as exc:  # writing the run directory (train_log.csv, metrics.json, ...): disk full, permissions
            fail(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
        except Exception as exc:  # a bug, or under torchrun: a collective failed because another rank ended
            from dlf.train.distributed import PEER_LOST, peer_lost

            if not under_torchrun:
                raise
            if isinstance(exc, RuntimeError) and peer_lost(exc):
                fail(f"rank {os.environ.get('RANK', '?')}: {PEER_LOST}")
            import traceback

            _exit_rank(traceback.format_exc().rstrip(), 1)  # what the interpreter would print, and its status
        except KeyboardInterrupt:  # Ctrl-C ended the run without a word (exit 130): say how to continue it
            line, code = _interrupted(resume if resume is not None else out), 143 if terminated else 130
            if under_torchrun:
                _exit_rank(line, code)
            err.print(line, markup=False, highlight=False, soft_wrap=True)  # the path is the user's text
            raise typer.Exit(code) from None
    out = resume if resume is not None else out
    if os.environ.get("RANK", "0") == "0":
        _print_result(metrics, out)


def _exit_rank(line: str, code: int) -> NoReturn:
    """Print `line` and end a stopped torchrun rank now, without the interpreter's teardown, which could deadlock: the
    interrupt's (or error's) traceback keeps DDP's Reducer, and with it the gloo process group, alive until that
    teardown frees them with the GIL held; ProcessGroupGloo's destructor then joins its worker threads, one of which may
    be freeing the collective the interrupt cut short, which takes the GIL. The rank hung until torchrun killed it 30 s
    later (seen in 5 of 30 interrupts), and a peer waiting in a collective with it. Nothing is left to do by now: the
    run's files were closed (and a checkpoint being written removed) as the exception unwound."""
    import os

    try:  # (not through rich, which raises SystemExit on a broken pipe)
        sys.stderr.write(line + "\n")
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # `kill -9` of the launcher closed the pipe our stderr goes to: nobody is left to read it
        pass
    os._exit(code)


def _interrupted(run_dir: Path | None) -> str:
    return "interrupted: " + (f"continue with dlf train --resume {run_dir}" if run_dir is not None
                              else "nothing was saved (no --out)")


def _print_result(metrics: dict, out: Path | None) -> None:
    from dlf.train.trainer import fmt_metric

    table = Table(title=f"{metrics['model']} on {metrics['dataset']} (test split)")
    keys = ["auc", "logloss"] + (["gauc"] if "gauc" in metrics["test"] else [])  # gAUC: data with a group column
    for col in ("", "AUC", "logloss", "gAUC")[:len(keys) + 1]:
        table.add_column(col, justify="right" if col else "left")
    table.add_row(metrics["model"], *(fmt_metric(metrics["test"][k]) for k in keys))
    if "oracle_test" in metrics:
        o = metrics["oracle_test"]
        table.add_row("oracle (true probabilities)", *(fmt_metric(o.get(k, float("nan"))) for k in keys))
    Console().print(table)
    if out is not None:
        say(f"run directory: {out}")


class _PreprocessCommand(TyperCommand):
    """`dlf preprocess --help` also lists the presets and --option keys, from their registries: imported only
    when the help is shown (they need NumPy and PyArrow, which the other commands start without)."""

    def format_help(self, ctx, formatter) -> None:
        from rich.panel import Panel

        from dlf.data.preprocess import KNOWN_OPTIONS
        from dlf.data.presets import PRESETS

        super().format_help(ctx, formatter)
        presets = [(p.name, p.description) for p in PRESETS.values()]
        options = [(f"{key}={value}", doc) for key, (value, doc) in KNOWN_OPTIONS.items()]
        for title, rows in (("Presets: --preset NAME", presets), ("Options: --option KEY=VALUE", options)):
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold cyan", no_wrap=True)
            grid.add_column()
            for key, text in rows:
                grid.add_row(escape(key), escape(text))
            Console().print(Panel(grid, title=title, title_align="left", border_style="dim"))


@app.command(cls=_PreprocessCommand)
def preprocess(
    preset: str = typer.Option(..., help="The dataset's format: a preset listed below."),
    input_: list[str] = typer.Option(..., "--input", "-i", help="Input file or folder; ROLE=PATH (train/valid/test) "
                                     "to give a split as a file (repeatable)."),
    out: Path = typer.Option(..., help="Output folder (replaced atomically when complete)."),
    schema: Optional[Path] = typer.Option(None, help="Schema YAML (docs/data.md, \"Schema YAML\"), or a FuxiCTR "
                                          "dataset_config.yaml."),
    option: list[str] = typer.Option([], "--option", "-o", help="KEY=VALUE, overriding the preset's default; "
                                     "keys listed below (repeatable)."),
    on_bad_row: str = typer.Option("error", help="error: stop at the first bad row; skip: drop and count them."),
    force: bool = typer.Option(False, help="Rebuild even when the output is up to date."),
) -> None:
    """Preprocess a raw dataset into the fast on-disk format that `dlf train --data` reads."""
    from dlf.data.preprocess import preprocess as run_preprocess
    from dlf.data.schema import DataError

    if on_bad_row not in ("error", "skip"):
        _fail(f"--on-bad-row must be error or skip, got {on_bad_row!r}")
    options = {}
    for item in option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _fail(f"--option {item!r} must look like KEY=VALUE")
        options[key.strip()] = value.strip()
    try:
        result = run_preprocess(preset, input_, out, schema=schema, options=options, on_bad_row=on_bad_row,
                                force=force, log=say_err)
    except DataError as exc:
        _fail(str(exc))
    meta = result.feature_map.meta
    if result.skipped:
        say(f"{out}: up to date, nothing to do")
        return
    splits = ", ".join(f"{k} {v['rows']:,} rows" + (f" ({v['label_rate']:.1%} positive)" if v["rows"] else "")
                       for k, v in meta["splits"].items())
    say(f"wrote {out}: {splits}; {len(result.feature_map.fields)} fields; "
        f"{result.rows / max(result.seconds, 1e-9):,.0f} rows/s")
    bad = meta.get("bad_rows", {})
    if bad.get("count"):
        where = ", ".join(f"{f}: {n}" for f, n in bad["by_file"].items())
        say(f"skipped {bad['count']} bad row(s) ({where}); first: {bad['examples'][0]}")
    for reason, n in (meta.get("filtered_rows") or {}).items():
        say(f"dropped {n:,} row(s) by the preset's rule: {reason}")


@app.command()
def download(
    name: str = typer.Argument(..., help=f"{', '.join(n for n, d in DATASETS.items() if d.files)} (fetched); "
                               f"{', '.join(n for n, d in DATASETS.items() if not d.files)} (behind a login: "
                               "says where to get the files and where to put them)."),
    out: Path = typer.Option(..., help="Folder for the raw files (a rerun resumes or does nothing)."),
) -> None:
    """Fetch a public dataset (checksums, resume) and print the `dlf preprocess` command to run next."""
    from dlf.data.download import DownloadError
    from dlf.data.download import download as run_download

    try:
        command = run_download(name, out, log=say_err)
    except DownloadError as exc:
        _fail(str(exc))
    say(f"next: {command}")


@app.command()
def models() -> None:
    """List the registered models."""
    from dlf.models.registry import available_models, get_entry

    for name in available_models():
        Console().print(f"{name:<12} {get_entry(name).description}", highlight=False)


from dlf.bench.commands import register as _register_bench_commands  # noqa: E402

_register_bench_commands(app, _fail)  # dlf bench / analyze (src/dlf/bench/commands.py)


from dlf.serve.commands import register as _register_serve_commands  # noqa: E402

_register_serve_commands(app, _fail)  # dlf export / predict / serve (src/dlf/serve/commands.py)


def main() -> None:
    if sys.argv[1:2] and sys.argv[1] in ("train", "bench", "predict", "evaluate", "serve"):
        restart_with_tcmalloc()  # the commands that run models: TCMalloc when installed (docs/training.md, "Memory")
    app()


if __name__ == "__main__":
    sys.exit(main())

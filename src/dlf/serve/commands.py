"""The `dlf export`, `dlf predict`, `dlf evaluate` and `dlf serve` commands (registered on dlf.cli's Typer
app).

Thin wrappers over dlf.serve.bundle / predict / evaluate / server; every expected failure is one
`error: ...` line and exit status 2 (through dlf.cli's `_fail`).
"""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape

from dlf._runtime import sigterm_as_interrupt


def register(app: typer.Typer, fail: Callable[[str], None]) -> None:
    err = Console(stderr=True)

    def check_reading(on_bad_row: str, chunk_mb: float) -> None:
        if on_bad_row not in ("error", "skip"):
            fail(f"--on-bad-row must be error or skip, got {on_bad_row!r}")
        # nan/inf were int() tracebacks, and below about 1 KiB Arrow refused its block size (0 bytes: an Arrow error)
        if not (math.isfinite(chunk_mb) and chunk_mb >= 0.001):
            fail(f"--chunk-mb must be a number >= 0.001 (MiB of text per chunk), got {chunk_mb}")

    def load_scorer(bundle: Path, engine: str, batch_size: int, threads: int, precision: str):
        """(the bundle, its Scorer) for predict and evaluate, the bundle's warnings printed."""
        from dlf.serve.bundle import load_bundle
        from dlf.serve.predict import Scorer

        if threads and engine == "torch":
            import torch
            torch.set_num_threads(threads)
        b = load_bundle(bundle, build_model=engine == "torch")
        for warning in b.warnings:
            err.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False, soft_wrap=True)
        return b, Scorer(b, engine, batch_size, threads, precision)

    @contextlib.contextmanager
    def interrupted(what: str, terminated: list[int]):
        """Ctrl-C or SIGTERM (see sigterm_as_interrupt): one line and exit status 130 / 143 (were typer's silent exit
        130 and a silent exit 143)."""
        try:
            yield
        except KeyboardInterrupt:
            err.print(f"interrupted: {what}", highlight=False, soft_wrap=True)
            raise typer.Exit(143 if terminated else 130) from None

    @app.command()
    def export(
        run: Path = typer.Argument(..., help="A finished run directory (dlf train --out RUN)."),
        out: Path = typer.Option(..., "--out", help="Bundle folder to write (replaced atomically with --force)."),
        format: str = typer.Option("torch", "--format", help="torch: weights + preprocessing; onnx: also model.onnx "
                                   "(whole model, ids/values -> probability)."),
        data: Optional[Path] = typer.Option(None, "--data", help="The run's processed dataset folder, when it is "
                                            "not where the run's config.yaml says."),
        force: bool = typer.Option(False, help="Replace an existing bundle at --out."),
    ) -> None:
        """Write a self-contained model bundle (weights, feature map, vocabularies, config) for serving."""
        from dlf.data.schema import DataError
        from dlf.serve.bundle import BundleError, export_bundle

        try:
            path = export_bundle(run, out, data=data, format=format, force=force,
                                 log=lambda m: err.print(m, markup=False, highlight=False, soft_wrap=True))
        except (BundleError, DataError) as exc:
            fail(str(exc))
        import json
        manifest = json.loads((path / "bundle.json").read_text())
        Console().print(f"wrote bundle {path}: model {manifest['model']['name']}, "
                        f"{manifest['preprocessing']['mode']} inputs, {len(manifest['files'])} files"
                        + (", model.onnx" if manifest.get("onnx") else ""), markup=False, highlight=False,
                        soft_wrap=True)

    @app.command()
    def predict(
        bundle: Path = typer.Argument(..., help="Bundle folder (dlf export)."),
        input_: Path = typer.Option(..., "--input", "-i", help="CSV, TSV or Parquet file of raw rows (libFM lines "
                                    "for a libfm/frappe model)."),
        output: Path = typer.Option(..., "--output", "-o", help="Output file: .parquet, or .csv/.tsv."),
        id_column: Optional[str] = typer.Option(None, "--id-column", help="Copy this input column to the output."),
        on_bad_row: str = typer.Option("error", help="error: stop at the first bad row; skip: drop and count them."),
        engine: str = typer.Option("torch", help="torch or onnx (ONNX Runtime; needs a bundle exported with "
                                   "--format onnx)."),
        format: str = typer.Option("auto", "--format", help="Input format: auto (from the suffix), csv, tsv, parquet, "
                                   "libfm."),
        output_format: str = typer.Option("auto", "--output-format", help="Output format: auto (from the suffix; "
                                          "none: csv), csv, tsv, parquet."),
        header: Optional[bool] = typer.Option(None, "--header/--no-header", help="Whether the CSV/TSV has a header "
                                              "(default: as the training files)."),
        columns: Optional[str] = typer.Option(None, help="Column names of a file without header, comma-separated."),
        batch_size: int = typer.Option(8192, min=1, help="Rows per model call."),
        chunk_mb: float = typer.Option(4.0, help="Text read per chunk (bounds memory)."),
        threads: int = typer.Option(0, min=0, help="Intra-op threads (0: the engine's default)."),
        precision: str = typer.Option("fp32", help="fp32 or bf16 (torch engine: bf16 autocast, faster on CPUs with "
                                      "bf16 instructions; probabilities differ in about the third digit)."),
    ) -> None:
        """Score a file of raw rows with a bundle, streaming it in chunks; writes probabilities."""
        from dlf.data.schema import DataError
        from dlf.serve.bundle import BundleError
        from dlf.serve.encoding import unseen_notes
        from dlf.serve.predict import predict_file

        check_reading(on_bad_row, chunk_mb)
        # `kill`, `timeout` or a job scheduler: unwind as Ctrl-C does, so that predict_file deletes its temporary output
        with sigterm_as_interrupt() as terminated, interrupted("no output was written", terminated):
            try:
                b, scorer = load_scorer(bundle, engine, batch_size, threads, precision)
                result = predict_file(b, input_, output, id_column=id_column, on_bad_row=on_bad_row, engine=engine,
                                      fmt=format, output_format=output_format, header=header,
                                      columns=[c.strip() for c in columns.split(",")] if columns else None,
                                      block_bytes=int(chunk_mb * (1 << 20)), scorer=scorer,
                                      log=lambda m: err.print(m, markup=False, highlight=False, soft_wrap=True))
            except (BundleError, DataError) as exc:
                fail(str(exc))
        # on stderr, with the progress lines: `--output /dev/stdout | ...` pipes the scores alone
        rate = result.rows / max(result.seconds, 1e-9)
        err.print(f"wrote {result.output}: {result.rows:,} rows scored in {result.seconds:.1f}s "
                  f"({rate:,.0f} rows/s, {engine}, {precision})", markup=False, highlight=False, soft_wrap=True)
        bad = result.bad_rows
        if bad.get("count"):
            err.print(f"skipped {bad['count']} bad row(s); first: {bad['examples'][0]}", markup=False,
                      highlight=False, soft_wrap=True)
        for note in unseen_notes(result.unseen):
            err.print(note, markup=False, highlight=False, soft_wrap=True)

    @app.command()
    def evaluate(
        bundle: Path = typer.Argument(..., help="Bundle folder (dlf export)."),
        input_: Path = typer.Option(..., "--input", "-i", help="CSV, TSV or Parquet file of raw rows with the label "
                                    "column (e.g. the next day's logs), or libFM lines for a libfm/frappe model."),
        group_column: Optional[str] = typer.Option(None, "--group-column", help="Also report gAUC grouped by this "
                                                   "input column (default: the training data's group column, if any; "
                                                   "'': no gAUC)."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the metrics to this JSON file."),
        on_bad_row: str = typer.Option("error", help="error: stop at the first bad row; skip: drop and count them."),
        engine: str = typer.Option("torch", help="torch or onnx."),
        format: str = typer.Option("auto", "--format", help="Input format: auto (from the suffix), csv, tsv, parquet, "
                                   "libfm."),
        header: Optional[bool] = typer.Option(None, "--header/--no-header", help="Whether the CSV/TSV has a header "
                                              "(default: as the training files)."),
        columns: Optional[str] = typer.Option(None, help="Column names of a file without header, comma-separated."),
        batch_size: int = typer.Option(8192, min=1, help="Rows per model call."),
        chunk_mb: float = typer.Option(4.0, help="Text read per chunk."),
        threads: int = typer.Option(0, min=0, help="Intra-op threads (0: the engine's default)."),
        precision: str = typer.Option("fp32", help="fp32 or bf16 (torch engine: bf16 autocast)."),
    ) -> None:
        """Score a labelled file with a bundle and print AUC, logloss, calibration (and gAUC).

        The same metrics as training prints for its test split."""
        from dlf.data.schema import DataError
        from dlf.serve.bundle import BundleError
        from dlf.serve.encoding import unseen_notes
        from dlf.serve.evaluate import check_json, evaluate_file, write_json
        from dlf.serve.predict import folder_for
        from dlf.train.trainer import fmt_metric

        check_reading(on_bad_row, chunk_mb)
        with sigterm_as_interrupt() as terminated, interrupted("no metrics were written", terminated):
            try:
                b, scorer = load_scorer(bundle, engine, batch_size, threads, precision)
                if json_out is not None:
                    check_json(json_out, input_)
                # --json's folder before scoring (a missing one failed only once the whole file was scored), and
                # removed again if the command fails
                with folder_for(json_out, "metrics") if json_out is not None else contextlib.nullcontext():
                    result = evaluate_file(b, input_, group_column=group_column, on_bad_row=on_bad_row,
                                           fmt=format, header=header,
                                           columns=[c.strip() for c in columns.split(",")] if columns else None,
                                           block_bytes=int(chunk_mb * (1 << 20)), scorer=scorer,
                                           log=lambda m: err.print(m, markup=False, highlight=False, soft_wrap=True))
                    if json_out is not None:
                        write_json(result, json_out)
            except (BundleError, DataError) as exc:
                fail(str(exc))
        m = result.metrics
        shown = [("AUC", "auc"), ("logloss", "logloss")] + ([("gAUC", "gauc")] if "gauc" in m else []) \
            + [("calibration", "calibration")]
        Console().print(f"{result.input}: {result.rows:,} rows ({result.positives / result.rows:.1%} positive)  "
                        + "  ".join(f"{name} {fmt_metric(m[key])}" for name, key in shown)
                        + (f"  (gAUC by {result.group_column})" if result.group_column else ""),
                        markup=False, highlight=False, soft_wrap=True)
        bad = result.bad_rows
        if bad.get("count"):
            err.print(f"skipped {bad['count']} bad row(s); first: {bad['examples'][0]}", markup=False,
                      highlight=False, soft_wrap=True)
        for note in unseen_notes(result.unseen):
            err.print(note, markup=False, highlight=False, soft_wrap=True)
        trained = b.manifest.get("training", {}).get("precision")
        if trained == "bf16" and precision == "fp32":  # fp32 scores of bf16-trained weights differ a little: say why
            err.print("note: the run's own test metrics were computed under bf16 autocast (train.precision=bf16); "
                      "--precision bf16 scores as they were", markup=False, highlight=False, soft_wrap=True)

    @app.command()
    def serve(
        bundle: Path = typer.Argument(..., help="Bundle folder (dlf export)."),
        port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
        host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
        api_key: Optional[str] = typer.Option(None, envvar="DLF_API_KEY", help="Require this key in the X-API-Key "
                                              "header of /predict and /metadata (or set DLF_API_KEY)."),
        max_batch: int = typer.Option(1000, min=1, help="Most records per request (413 above)."),
        max_body_mb: float = typer.Option(4.0, help="Largest request body in MiB, as sent and gzip-decoded (413 "
                                          "above)."),
        engine: str = typer.Option("torch", help="torch or onnx."),
        threads: int = typer.Option(0, min=0, help="Intra-op threads (0: the engine's default)."),
        precision: str = typer.Option("fp32", help="fp32 or bf16 (torch engine: bf16 autocast)."),
        access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="One JSON line per request."),
        micro_batch: bool = typer.Option(True, "--micro-batch/--no-micro-batch", help="Merge requests that arrive "
                                         "while the model is busy into its next call."),
        log_level: str = typer.Option("info", help="uvicorn log level."),
    ) -> None:
        """Serve a bundle over HTTP: POST /predict, GET /health, /metadata, /metrics."""
        from dlf.data.schema import DataError
        from dlf.serve.bundle import BundleError

        if not (math.isfinite(max_body_mb) and max_body_mb * (1 << 20) >= 1):  # nan/inf: int() tracebacks
            fail(f"--max-body-mb must be a number > 0 (at least one byte), got {max_body_mb}")
        try:
            import fastapi  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:
            fail("dlf serve needs FastAPI and uvicorn: pip install 'dlf[serve]'")
        from uvicorn.config import LOG_LEVELS

        from dlf.serve.server import serve as run_server
        if log_level.lower() not in LOG_LEVELS:  # was a traceback from logging.config after the bundle loaded
            fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
        try:
            run_server(bundle, host=host, port=port, api_key=api_key or os.environ.get("DLF_API_KEY") or None,
                       max_batch=max_batch, max_body_bytes=int(max_body_mb * (1 << 20)), engine=engine,
                       threads=threads, log_level=log_level, access_logs=access_log, micro_batch=micro_batch,
                       precision=precision)
        except (BundleError, DataError) as exc:
            fail(str(exc))

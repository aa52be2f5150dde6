"""The `dlf bench` and `dlf analyze` commands (registered on dlf.cli's Typer app).

Thin wrappers over dlf.bench.runner / analyze; a bad spec or run folder is one `error: ...` line and
exit status 2 (through dlf.cli's `_fail`); a bench in which some runs failed exits with status 1, one stopped by
Ctrl-C with 130 and by SIGTERM, which stops it alike, with 143.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console

from dlf._runtime import sigterm_as_interrupt


def register(app: typer.Typer, fail: Callable[[str], None]) -> None:
    @app.command()
    def bench(
        spec_file: Optional[Path] = typer.Argument(None, help="Bench YAML (models, datasets, seeds, set, search); "
                                                   "see configs/bench/. Optional with --models."),
        out: Optional[Path] = typer.Option(None, "--out", help="Bench folder (default: the file's `out`, else "
                                           "runs/bench). Rerunning into it resumes."),
        models: Optional[str] = typer.Option(None, "--models", help="Comma-separated registered models or variants "
                                             "of the file (or of the --out bench), e.g. dlf,lr (replaces the file's "
                                             "list)."),
        datasets: Optional[str] = typer.Option(None, "--datasets", help="Comma-separated: synthetic, folders from "
                                               "dlf preprocess and/or datasets of the file by name (replaces the "
                                               "file's list)."),
        seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated train seeds, e.g. 1,2,3."),
        set_: list[str] = typer.Option([], "--set", "-s", help="Override for every run, e.g. --set train.epochs=2 "
                                       "(wins over the file; model.KEY only where the model has KEY)."),
        grid: list[str] = typer.Option([], "--grid", help="Search grid entry KEY=V1,V2,... (repeatable): equal-budget "
                                       "search per model, selected on validation."),
        trials: Optional[int] = typer.Option(None, "--trials", help="Search trials per model (0: the whole grid)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="Base run config (model/data/train YAML, "
                                              "as for dlf train) under every run; replaces the file's `config`."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the planned runs and their state; run nothing."),
        report_only: bool = typer.Option(False, "--report-only", help="Rewrite the report from the runs on disk."),
    ) -> None:
        """Run models x datasets x seeds (and ablation variants); write report.md, results.csv and bench.png."""
        from dlf.bench.runner import BenchError, load_spec, parse_sets, run_bench

        try:
            spec_path = spec_file
            # --out of an existing bench: its saved spec, flags on top (--models lr alone had built a spec of
            # defaults, under which every finished run was another config: moved aside and trained again)
            saved = (out or Path("runs/bench")) / "bench.yaml"
            if spec_path is None and (models is None or out is not None) and saved.is_file():
                spec_path = saved
            elif spec_path is None and models is None:
                fail("give a bench YAML file or --models (or --out of an existing bench to resume it)")
            spec = load_spec(spec_path, models=models, datasets=datasets, seeds=seeds, grid=grid, trials=trials,
                             check_data=not report_only)
            cli_sets = parse_sets(set_)
            if config is not None:
                if not config.is_file():
                    fail(f"--config {config} does not exist")
                spec.config = str(config)
        except BenchError as exc:
            fail(str(exc))
        if spec_path is not None and spec_file is None:  # resuming a saved bench.yaml: its --set flags come back
            import yaml
            cli_sets = {**(yaml.safe_load(spec_path.read_text()) or {}).get("cli_set", {}), **cli_sets}
        folder = out or Path(spec.out or "runs/bench")
        console = Console(soft_wrap=True)
        # SIGTERM (`kill`, `timeout`, a job scheduler) stops the bench as Ctrl-C does (report, resume)
        with sigterm_as_interrupt() as terminated:
            try:
                result = run_bench(spec, folder, console=console, cli_sets=cli_sets, dry_run=dry_run,
                                   report_only=report_only)
            except BenchError as exc:
                fail(str(exc))
            except KeyboardInterrupt:  # between runs or while writing the report (a run's own is caught by run_bench)
                console.print("[yellow]interrupted[/yellow]: rerun the same command to resume (finished runs are "
                              "kept)", highlight=False)
                raise typer.Exit(143 if terminated else 130) from None
        if dry_run:
            return
        chart = f"chart: {folder / 'bench.png'}" if result.no_chart is None else f"no chart: {result.no_chart}"
        console.print(f"report: {result.report}  ({chart}, per run: {folder / 'results.csv'})", markup=False,
                      highlight=False)
        if result.interrupted:
            raise typer.Exit(143 if terminated else 130)
        if result.failed:
            console.print(f"[red]{len(result.failed)} run(s) failed[/red]; see the report", highlight=False)
            raise typer.Exit(1)

    @app.command()
    def analyze(
        runs: list[Path] = typer.Argument(..., help="Run directories (dlf train --out / a bench's runs/...)."),
        out: Optional[Path] = typer.Option(None, "--out",
                                           help="Output folder (default: RUN/analysis of the first run)."),
        probe_rows: int = typer.Option(20_000, "--probe-rows", min=100, help="Train rows the linear probe is fit on."),
        no_probe: bool = typer.Option(False, "--no-probe", help="Skip the low-order linear probe."),
    ) -> None:
        """Plot gradient norms per branch and layer, and probe each DLF layer for the planted low-order signal.

        Reads each run's grad_norms.csv; the probe needs DLF runs on the synthetic data (compared in one chart)."""
        from dlf.bench.analyze import AnalysisError, analyze_runs

        try:
            result = analyze_runs(runs, out, probe_rows=probe_rows, probe=not no_probe,
                                  log=lambda m: Console().print(m, markup=False, highlight=False, soft_wrap=True))
        except AnalysisError as exc:
            fail(str(exc))
        for path in result["files"]:
            Console().print(f"wrote {path}", markup=False, highlight=False)

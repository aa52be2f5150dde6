"""`dlf preprocess` and `dlf train --data` as a user runs them."""
import json
import subprocess
import sys
from pathlib import Path

FIX = Path(__file__).parent / "fixtures" / "data"
TINY = ["--set", "model.embedding_dim=4", "--set", "model.layers=1", "--set", "model.rank=2",
        "--set", "model.interaction_tokens=2", "--set", "model.implicit_tokens=2", "--set", "model.hidden=8",
        "--set", "train.epochs=3", "--quiet"]


def run(*args):
    return subprocess.run([sys.executable, "-m", "dlf", *args], capture_output=True, text=True, timeout=300)


def test_preprocess_then_train_on_processed_data(tmp_path):
    out = tmp_path / "ml"
    proc = run("preprocess", "--preset", "movielens-1m", "--input", str(FIX / "movielens_tiny"), "--out", str(out),
               "--option", "ratios=0.5,0.25,0.25")
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "rating 3" in proc.stdout
    again = run("preprocess", "--preset", "movielens-1m", "--input", str(FIX / "movielens_tiny"), "--out", str(out),
                "--option", "ratios=0.5,0.25,0.25")
    assert again.returncode == 0 and "up to date" in again.stdout
    # train on a generated CSV with a learnable signal (label = a in {a0, a1}, 10 % flipped)
    import random
    rng = random.Random(0)
    lines = ["y,a,b,n"]
    for i in range(600):
        a, b = rng.randrange(6), rng.randrange(4)
        y = int(a < 2) ^ int(rng.random() < 0.1)
        lines.append(f"{y},a{a},b{b},{rng.random():.3f}")
    (tmp_path / "g.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "s.yaml").write_text("label: y\ncategorical: [a, b]\nnumeric: [n]\n")
    data = tmp_path / "g"
    proc = run("preprocess", "--preset", "generic", "--schema", str(tmp_path / "s.yaml"), "--input",
               str(tmp_path / "g.csv"), "--out", str(data))
    assert proc.returncode == 0, proc.stderr
    proc = run("train", "--data", str(data), "--out", str(tmp_path / "run"), "--set", "train.batch_size=64",
               "--set", "train.lr=0.01", *TINY)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dataset"] == "processed" and "oracle_test" not in metrics
    assert metrics["test"]["auc"] > 0.75, metrics["test"]
    fm = json.loads((tmp_path / "run" / "feature_map.json").read_text())
    assert [f["name"] for f in fm["fields"]] == ["a", "b", "n"]


def test_cli_errors_are_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1\t2\n")
    for args, needle in [
        (["preprocess", "--preset", "nosuch", "--input", str(bad), "--out", str(tmp_path / "o")], "unknown preset"),
        (["preprocess", "--preset", "criteo", "--input", str(bad), "--out", str(tmp_path / "o")],
         "bad.txt:1: expected 40 columns"),
        (["preprocess", "--preset", "criteo", "--input", str(bad), "--out", str(tmp_path / "o"), "--option", "x"],
         "must look like KEY=VALUE"),
        (["train", "--data", str(tmp_path / "missing")], "no such processed dataset"),
        # were Python tracebacks: a non-integer option, a directory as input, an output under a file
        (["preprocess", "--preset", "criteo", "--input", str(bad), "--out", str(tmp_path / "o"), "--option",
          "min_count=ten"], "--option min_count=ten: expected an integer"),
        (["preprocess", "--preset", "criteo", "--input", str(tmp_path), "--out", str(tmp_path / "o")],
         "is a directory, expected a file"),
        (["preprocess", "--preset", "criteo", "--input", str(bad), "--out", str(bad / "o")],
         "cannot write the output there"),
        (["preprocess", "--preset", "criteo", "--input", str(bad), "--out", str(tmp_path / "o"), "--on-bad-row",
          "drop"], "--on-bad-row must be error or skip, got 'drop'"),
    ]:
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len([l for l in proc.stderr.strip().splitlines() if l.startswith("error")]) == 1


def test_data_commands_do_not_import_torch(tmp_path):
    """dlf preprocess / download start without torch (~3 s) or the models: data code never imports them."""
    code = f"""
import sys
from typer.testing import CliRunner
import dlf, dlf.data
from dlf.cli import app
for args in (["preprocess", "--help"], ["download", "--help"],
             ["preprocess", "--preset", "kkbox", "-i", {str(FIX / "kkbox_tiny.csv")!r},
              "--out", {str(tmp_path / "o")!r}, "-o", "min_count=2"]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("dlf.models"))
assert not loaded, loaded
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o" / "feature_map.json").is_file()


def test_help_lists_the_presets_options_and_datasets_of_the_registries():
    from typer.testing import CliRunner

    from dlf.cli import app
    from dlf.data.download import DATASETS
    from dlf.data.preprocess import KNOWN_OPTIONS
    from dlf.data.presets import PRESETS

    out = CliRunner().invoke(app, ["preprocess", "--help"], env={"COLUMNS": "200"}).output
    for name, preset in PRESETS.items():
        assert f"{name}  " in out and preset.description[:40] in out, name
    for key, (value, _) in KNOWN_OPTIONS.items():
        assert f"{key}={value}" in out, key
    out = CliRunner().invoke(app, ["download", "--help"], env={"COLUMNS": "200"}).output
    assert all(name in out for name in DATASETS)


def test_text_from_the_users_file_is_printed_as_is_not_read_as_markup(tmp_path):
    # the skipped row's message quotes the bad value: '[/i]' was a rich MarkupError traceback after the data was
    # written, and '[b]' vanished from the paths and values shown
    folder = tmp_path / "in[b]"
    folder.mkdir()
    lines = ["y,a,n"] + [f"{i % 2},a{i % 3},{i}" for i in range(40)] + ["1,a1,4[/i]"]
    (folder / "g.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "s.yaml").write_text("label: y\ncategorical: [a]\nnumeric: [n]\n")
    out = tmp_path / "out[b]"
    args = ("preprocess", "--preset", "generic", "--schema", str(tmp_path / "s.yaml"), "--input",
            str(folder / "g.csv"), "--out", str(out), "--on-bad-row", "skip")
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}:" in proc.stdout and "'4[/i]'" in proc.stdout
    assert f"{out}: up to date" in run(*args).stdout
    proc = run("train", "--data", str(out), "--out", str(tmp_path / "run[b]"), "--set", "train.batch_size=8", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert f"run directory: {tmp_path / 'run[b]'}" in proc.stdout


def test_an_empty_split_is_reported_without_a_positive_rate(tmp_path):
    # it printed 'valid 0 rows (0.0% positive)': a rate of nothing read as a split of negatives
    lines = ["y,a,n"] + [f"{i % 2},a{i % 3},{i}" for i in range(40)]
    (tmp_path / "g.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "s.yaml").write_text("label: y\ncategorical: [a]\nnumeric: [n]\n")
    proc = run("preprocess", "--preset", "generic", "--schema", str(tmp_path / "s.yaml"), "--input",
               str(tmp_path / "g.csv"), "--out", str(tmp_path / "o"), "--option", "ratios=1,0,0")
    assert proc.returncode == 0, proc.stderr
    assert "train 40 rows (50.0% positive), valid 0 rows, test 0 rows;" in proc.stdout

"""A small generated CTR table with a learnable signal, for the serving tests, the load test and the
README walk-through: every kind of field the preprocessing knows (plain, hashed and criteo-bucket
categorical; standardized numeric; multi-valued), missing values, and an `id` column that is not
a feature.
"""
from __future__ import annotations

import math
import random
from pathlib import Path

DEMO_SCHEMA = """\
# dlf demo schema: `dlf preprocess --preset generic --schema demo_schema.yaml --input demo.csv --out data/demo`
format: csv
label: click
categorical: [city, device]
numeric:
  - {name: age, transform: standardize}
multi:
  - {name: tags, separator: ";", max_len: 4}
fields:
  - {name: site, kind: categorical, buckets: 64}
  - {name: visits_bucket, source: visits, kind: categorical, transform: criteo-bucket}
"""

CITIES = [f"city{i}" for i in range(12)]
DEVICES = ["phone", "tablet", "desktop", "tv"]
TAGS = [f"t{i}" for i in range(8)]


def demo_rows(rows: int, seed: int = 0, start_id: int = 0):
    """Yield dicts id, click, city, device, age, tags, site, visits (strings; '' = missing)."""
    rng = random.Random(seed)
    for i in range(rows):
        city = rng.choice(CITIES) if rng.random() > 0.05 else ""
        device = rng.choice(DEVICES)
        age = "" if rng.random() < 0.1 else str(rng.randint(16, 80))
        tags = rng.sample(TAGS, rng.randint(0, 3))
        site = f"s{rng.randrange(200)}"
        visits = "" if rng.random() < 0.1 else str(int(rng.expovariate(0.1)))
        logit = (-1.0 + (1.2 if city in CITIES[:4] else 0.0) + (0.8 if device == "phone" else -0.2)
                 + (0.6 if "t1" in tags else 0.0) - (0.02 * (int(age) - 40) if age else 0.0)
                 + (0.5 if visits and int(visits) > 10 else 0.0))
        click = int(rng.random() < 1 / (1 + math.exp(-logit)))
        yield {"id": f"r{start_id + i}", "click": str(click), "city": city, "device": device, "age": age,
               "tags": ";".join(tags), "site": site, "visits": visits}


def write_demo_csv(path: str | Path, rows: int = 3000, seed: int = 0, label: bool = True, start_id: int = 0) -> Path:
    """A CSV of `demo_rows` (without the click column when label=False)."""
    path = Path(path)
    cols = ["id", "click", "city", "device", "age", "tags", "site", "visits"]
    if not label:
        cols.remove("click")
    with open(path, "w") as fh:
        fh.write(",".join(cols) + "\n")
        for r in demo_rows(rows, seed, start_id):
            fh.write(",".join(r[c] for c in cols) + "\n")
    return path


def write_demo_schema(path: str | Path) -> Path:
    path = Path(path)
    path.write_text(DEMO_SCHEMA)
    return path


TINY_DLF = {"name": "dlf", "embedding_dim": 8, "layers": 1, "rank": 4, "interaction_tokens": 4,
            "implicit_tokens": 4, "hidden": 16, "attention_heads": 2}


def build_demo_run(folder: str | Path, rows: int = 3000, test_rows: int = 500, model: dict | None = None,
                   epochs: int = 2, seed: int = 0) -> dict:
    """Generate demo train/test CSVs, preprocess them (test given as a file), train a tiny model.

    Returns the paths: {'train_csv', 'test_csv', 'schema', 'data', 'run'} (all under `folder`)."""
    from rich.console import Console

    from dlf.api import train
    from dlf.data.preprocess import preprocess

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"train_csv": write_demo_csv(folder / "train.csv", rows, seed),
             "test_csv": write_demo_csv(folder / "test.csv", test_rows, seed + 1, start_id=10 ** 6),
             "schema": write_demo_schema(folder / "schema.yaml"), "data": folder / "data", "run": folder / "run"}
    preprocess("generic", [paths["train_csv"], f"test={paths['test_csv']}"], paths["data"], schema=paths["schema"])
    cfg = {"model": dict(model or TINY_DLF), "data": {"path": str(paths["data"])},
           "train": {"epochs": epochs, "batch_size": 256, "lr": 0.005, "progress": False, "tensorboard": False}}
    train(cfg, out=paths["run"], console=Console(quiet=True))
    return paths


def main(argv: list[str] | None = None) -> None:
    """python -m dlf.serve.demo [DIR]: write DIR/demo.csv (5,000 labelled rows), DIR/new.csv (1,000 rows
    without label, to score), DIR/later.csv (1,000 other labelled rows, for `dlf evaluate`) and
    DIR/demo_schema.yaml."""
    import argparse

    # argparse: `--help` was taken for a folder name (and written to), a second folder silently ignored
    parser = argparse.ArgumentParser(prog="python -m dlf.serve.demo", description=main.__doc__.split(": ", 1)[1])
    parser.add_argument("dir", nargs="?", default=".", help="folder to write to, made if missing (default: .)")
    folder = Path(parser.parse_args(argv).dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_demo_csv(folder / "demo.csv", 5000, seed=0)
        write_demo_csv(folder / "new.csv", 1000, seed=1, label=False, start_id=10 ** 6)
        write_demo_csv(folder / "later.csv", 1000, seed=2, start_id=2 * 10 ** 6)
        write_demo_schema(folder / "demo_schema.yaml")
    except OSError as exc:  # DIR is a file, not writable, ...: was a FileExistsError traceback
        parser.exit(2, f"error: {folder}: cannot write the demo files: {exc.strerror or exc}\n")
    print(f"wrote {folder / 'demo.csv'}, {folder / 'new.csv'}, {folder / 'later.csv'} and "
          f"{folder / 'demo_schema.yaml'}")


if __name__ == "__main__":
    main()

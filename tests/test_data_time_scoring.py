"""A time split's Parquet timestamp column is read as seconds by the fields reading it: in scoring as in training."""
import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from rich.console import Console

from dlf.api import train
from dlf.data.preprocess import preprocess
from dlf.data.schema import FieldOptions, Schema, SplitOptions
from dlf.serve.bundle import export_bundle, load_bundle
from dlf.serve.predict import predict_file


def test_a_parquet_time_column_read_by_fields_is_scored_as_it_was_trained(tmp_path):
    """Preprocessing read the time split's timestamp column as seconds, for the numeric and categorical fields
    reading it too; dlf predict read it as text: 'field 'ts': expected a number, got '2024-01-01 00:00:00...''
    (a categorical field's value would have been out of vocabulary). The same rows with the seconds written as
    numbers in a CSV score alike."""
    n = 60
    seconds = [1704067200 + 3600 * ((i * 7) % 30) for i in range(n)]
    ts = pa.array([dt.datetime.fromtimestamp(s, dt.timezone.utc) for s in seconds], pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.table({"click": [i % 2 for i in range(n)], "city": [f"c{i % 4}" for i in range(n)], "ts": ts}),
                   tmp_path / "log.parquet")
    pcsv.write_csv(pa.table({"city": [f"c{i % 4}" for i in range(n)], "ts": seconds}), tmp_path / "log.csv")
    schema = Schema(fields=[FieldOptions("city"), FieldOptions("hour", source="ts"),
                            FieldOptions("t", "numeric", source="ts", transform="standardize")], label="click",
                    split=SplitOptions("time", time_column="ts"))
    preprocess("generic", [tmp_path / "log.parquet"], tmp_path / "data", schema=schema)
    train({"model": {"name": "lr"}, "data": {"dataset": "processed", "path": str(tmp_path / "data")},
           "train": {"epochs": 1, "batch_size": 8, "monitor": "logloss", "progress": False, "tensorboard": False}},
          out=tmp_path / "run", console=Console(quiet=True))
    bundle = load_bundle(export_bundle(tmp_path / "run", tmp_path / "bundle"))
    scores = [pq.read_table(predict_file(bundle, tmp_path / f"log.{kind}", tmp_path / f"{kind}.parquet").output)
              ["probability"].to_numpy() for kind in ("parquet", "csv")]
    np.testing.assert_array_equal(scores[0], scores[1])

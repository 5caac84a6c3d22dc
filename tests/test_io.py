"""Atomic writes and schema-checked Parquet."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pathfuse.io import SchemaError, atomic_path, read_parquet, write_json, write_parquet


def test_parquet_roundtrip_keeps_schema_and_meta(tmp_path):
    df = pd.DataFrame({"x": [1, 2], "logits": [[0.1, 0.2], [0.3, 0.4]]})
    path = write_parquet(df, tmp_path / "a.parquet", schema="predictions", meta={"task": "t", "n": 2})
    back, meta = read_parquet(path, schema="predictions")
    assert meta == {"task": "t", "n": 2}
    assert back["x"].tolist() == [1, 2] and list(back["logits"][1]) == pytest.approx([0.3, 0.4])


def test_reader_refuses_other_schema_and_version(tmp_path):
    path = write_parquet(pd.DataFrame({"x": [1]}), tmp_path / "a.parquet", schema="tiles")
    with pytest.raises(SchemaError, match="expected a pathfuse 'predictions' table"):
        read_parquet(path, schema="predictions")
    table = pq.read_table(path)
    kv = dict(table.schema.metadata)
    kv[b"pathfuse.schema_version"] = b"999"
    pq.write_table(table.replace_schema_metadata(kv), path)
    with pytest.raises(SchemaError, match="version 999"):
        read_parquet(path, schema="tiles")
    foreign = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": [1]}), foreign)
    with pytest.raises(SchemaError, match=r"plain\.parquet"):
        read_parquet(foreign, schema="tiles")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not dest.exists() and list(tmp_path.iterdir()) == []
    write_json({"a": 1}, dest)
    assert dest.read_text().strip().startswith("{") and len(list(tmp_path.iterdir())) == 1
    assert dest.stat().st_mode & 0o044, "outputs must be readable by others, like any file the umask allows"


def test_stale_temporaries_of_a_killed_job_are_removed(tmp_path):
    from pathfuse.io import remove_stale_temporaries

    (tmp_path / ".fold1.partial.parquet.ab12cd.tmp.parquet").write_bytes(b"half")
    (tmp_path / "predictions.parquet").write_bytes(b"kept")
    (tmp_path / ".hidden_but_not_temporary").write_bytes(b"kept")
    assert remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden_but_not_temporary", "predictions.parquet"]
    assert remove_stale_temporaries(tmp_path / "missing") == 0

"""SPEC §8 "reproducible to the bit": the same input files and code publish bit-identical
values in every result table — run to run, with one or two Polars threads, with or
without Prefect, with 1, 3 or 8 partitions, in this process or on a local Dask cluster.

Each variant is a real ``margin run`` in its own process (``POLARS_MAX_THREADS`` is read
when Polars starts) into its own warehouse; the published tables are then compared by a
digest of their exact bits (every float as its 64-bit pattern).  The book (a few hundred
generated accounts) is large enough that a thread-scheduled group-by sum drifts in the
last digits on most runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from market.generate import generate_day
from transforms.contract import RESULT_KEYS, RESULT_TABLES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
AS_OF = dt.date(2026, 11, 16)


def column_bits(series: pl.Series) -> bytes:
    """The exact content of a column: float bit patterns, null mask, list lengths."""
    if isinstance(series.dtype, pl.List):
        return series.list.len().to_numpy().tobytes() + column_bits(series.explode())
    nulls = series.is_null().to_numpy().tobytes()
    if series.dtype.is_float():
        return nulls + series.fill_null(0.0).to_numpy().astype(np.float64).view(np.uint64).tobytes()
    return nulls + "\x1f".join("" if v is None else str(v) for v in series.to_list()).encode()


def table_digest(frame: pl.DataFrame) -> str:
    digest = hashlib.sha256()
    for series in frame.iter_columns():
        digest.update(series.name.encode() + b"\x1e" + column_bits(series))
    return digest.hexdigest()


def published_digests(db: Path) -> dict[str, str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {
            table: table_digest(
                con.sql(
                    f"SELECT * EXCLUDE (as_of_date, run_id) FROM {table} ORDER BY {', '.join(RESULT_KEYS[table])}"
                ).pl()
            )
            for table in RESULT_TABLES
        }


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bit-identical") / "inputs"
    generate_day(root, AS_OF, 300, seed=11)
    return root


def margin_run(book: Path, db: Path, *options: str, threads: int = 2, orchestration: str = "none") -> dict[str, str]:
    env = {**os.environ, "POLARS_MAX_THREADS": str(threads), "MARGIN_ORCHESTRATION": orchestration,
           "MARGIN_QUIET": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--date", AS_OF.isoformat(), "--inputs", str(book),
         "--db", str(db), "--no-summary", *options],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return published_digests(db)


def test_every_variant_publishes_the_same_bits(book, tmp_path, prefect_api):
    reference = margin_run(book, tmp_path / "base.duckdb", threads=2)
    variants = {
        "rerun": margin_run(book, tmp_path / "rerun.duckdb", threads=2),
        "one thread": margin_run(book, tmp_path / "one-thread.duckdb", threads=1),
        "3 partitions, one thread": margin_run(book, tmp_path / "p3.duckdb", "--partitions", "3", threads=1),
        "8 partitions": margin_run(book, tmp_path / "p8.duckdb", "--partitions", "8"),
        "prefect": margin_run(book, tmp_path / "prefect.duckdb", orchestration="prefect"),
        "3 partitions on local dask": margin_run(
            book, tmp_path / "dask.duckdb", "--partitions", "3", "--dask-address", "local", orchestration="prefect"
        ),
    }
    differing = {
        name: [table for table in RESULT_TABLES if digests[table] != reference[table]]
        for name, digests in variants.items()
    }
    assert differing == {name: [] for name in variants}


def test_digest_sees_the_last_bit():
    one = pl.DataFrame({"im": [42679.62563270287]})
    other = pl.DataFrame({"im": [42679.62563270286]})
    assert table_digest(one) != table_digest(other)
    assert table_digest(pl.DataFrame({"x": [0.0]})) != table_digest(pl.DataFrame({"x": [-0.0]}))
    assert table_digest(one) == table_digest(one.clone())

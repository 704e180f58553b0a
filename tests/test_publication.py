"""The publish transaction filled while the run computes (``flows.warehouse.Publication``,
``flows.eod.publish_step``): a failed or abandoned publication leaves the date's previous
rows, frees the warehouse, and the run falls back to its saved files."""

from __future__ import annotations

import duckdb
import pytest

from flows import eod, results_store, warehouse
from flows.settings import results_dir_for
from tests.published_books import DAY, build_warehouse


@pytest.fixture
def published(tmp_path):
    db, _ = build_warehouse(tmp_path)
    return db


def _rows(db) -> dict[str, int]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t} WHERE as_of_date = ?", [DAY]).fetchone()[0]
                for t in ("position_margin", "account_margin")} | {
            "runs": con.execute("SELECT count(*) FROM runs").fetchone()[0]}


def test_a_failed_insert_commits_nothing_and_frees_the_warehouse(published, tmp_path):
    before = _rows(published)
    assert before["position_margin"] > 0
    broken = tmp_path / "not-parquet.parquet"
    broken.write_text("not a Parquet file")
    publication = warehouse.Publication(published, DAY, "run-broken", lock_timeout=0)
    publication.insert("position_margin", [broken])
    with pytest.raises(warehouse.InsertFailed, match="loading the results"):
        publication.commit({"run_id": "run-broken", "as_of_date": DAY.isoformat(), "status": "succeeded"})
    assert _rows(published) == before  # the DELETE of the date's rows was rolled back too
    with warehouse.open_warehouse(published, lock_timeout=0):  # and the write lock is released
        pass


def test_abort_with_queued_inserts_keeps_the_previous_rows(published):
    before = _rows(published)
    with duckdb.connect(str(published), read_only=True) as con:
        frame = con.sql("SELECT * EXCLUDE (as_of_date, run_id) FROM account_margin").pl()
    publication = warehouse.Publication(published, DAY, "run-abandoned", lock_timeout=0)
    for _ in range(3):
        publication.insert("account_margin", frame)
    publication.abort()
    publication.abort()  # idempotent
    assert not publication.holds({t: [] for t in warehouse.RESULT_TABLES})
    assert _rows(published) == before


def test_a_busy_warehouse_gives_no_early_publication(published):
    with duckdb.connect(str(published), read_only=True):  # an analyst's session
        assert eod.begin_publication(published, DAY, "run-busy") is None


def test_publish_step_falls_back_to_the_saved_files(published, tmp_path):
    """An early insert that failed (here: a file that is not Parquet) must not fail the run:
    nothing was committed, and the saved copy is published instead."""
    with duckdb.connect(str(published), read_only=True) as con:
        tables = {t: con.sql(f"SELECT * EXCLUDE (as_of_date, run_id) FROM {t} WHERE as_of_date = ?",
                             params=[DAY]).pl() for t in warehouse.RESULT_TABLES}
    run_id = "run-fallback"
    record = {"run_id": run_id, "as_of_date": DAY.isoformat(), "status": "succeeded"}
    scratch = tmp_path / "written"
    files = {}
    for table, frame in tables.items():
        path = scratch / table / "part-00000.parquet"
        path.parent.mkdir(parents=True)
        results_store.write_durably(frame, path)
        files[table] = [path]
    saved = results_store.save_results(results_dir_for(published), DAY, run_id, files, record)
    broken = tmp_path / "elsewhere" / "position_margin" / "part-00000.parquet"
    broken.parent.mkdir(parents=True)
    broken.write_text("not a Parquet file")
    publication = warehouse.Publication(published, DAY, run_id, lock_timeout=0)
    for table, paths in files.items():
        publication.insert_file(table, broken if table == "position_margin" else paths[0])
    eod.publish_step(str(published), DAY, run_id, str(saved), record, 0, publication)
    after = _rows(published)
    assert after["position_margin"] == tables["position_margin"].height
    with duckdb.connect(str(published), read_only=True) as con:
        assert con.execute("SELECT DISTINCT run_id FROM position_margin WHERE as_of_date = ?", [DAY]).fetchall() == [
            (run_id,)]


def test_result_files_fill_whole_duckdb_row_groups(tmp_path):
    """The result files' row groups are at most DuckDB's row group (``ROW_GROUP_ROWS``), so a
    loaded table is whole row groups written as it loads: given 500,001 rows (a 5M book's
    ``account_margin``), expect row groups of ≤ 122,880 rows in the file, and in the
    warehouse full row groups of DuckDB's own size with only the last one partly filled
    (Polars' default of 125,001 rows left partly filled ones that the checkpoint rewrote)."""
    import polars as pl
    import pyarrow.parquet as pq

    rows = 500_001
    frame = pl.DataFrame({"account_id": [f"ACC{i:07d}" for i in range(rows)], "value": [i * 0.5 for i in range(rows)]})
    path = tmp_path / "part-00000.parquet"
    results_store.write_durably(frame, path)
    metadata = pq.ParquetFile(path).metadata
    assert max(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)) <= results_store.ROW_GROUP_ROWS
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute("CREATE TABLE t (account_id VARCHAR, value DOUBLE)")
        con.execute("SET preserve_insertion_order = false")
        con.execute("INSERT INTO t SELECT * FROM read_parquet(?)", [str(path)])
        con.execute("CHECKPOINT")
        sizes = sorted((r[0] for r in con.execute(
            "SELECT max(start + count) - min(start) FROM pragma_storage_info('t') WHERE column_name = 'value' "
            "GROUP BY row_group_id").fetchall()), reverse=True)
    assert sizes[0] == results_store.ROW_GROUP_ROWS  # DuckDB's own row group size is the constant
    assert sum(size < results_store.ROW_GROUP_ROWS for size in sizes) == 1

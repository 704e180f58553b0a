"""Configuration and paths an operator gets wrong (issue 12, SPEC §2, §8), and a damaged run log.

Each was a traceback, a silent success or a silent fall back on the main before issue 12.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows import warehouse
from flows.eod import RunFailed, run_end_of_day
from flows.loading import StructuralError, load_inputs, read_policy

AS_OF = dt.date(2025, 3, 14)
BOOK = "book_a_12_accounts"


@pytest.fixture
def book(example_inputs):
    return example_inputs(BOOK)


def structural(inputs) -> StructuralError:
    with pytest.raises(StructuralError) as caught:
        load_inputs(inputs, AS_OF)
    assert "\n" not in str(caught.value)
    return caught.value


def test_unknown_policy_key_is_structural_naming_the_key(book):
    policy = book / "reference" / "policy.toml"
    policy.write_text(policy.read_text() + "maintenance_ration = 0.5\n")
    error = structural(book)
    assert error.column == "maintenance_ration" and "did you mean 'maintenance_ratio'" in str(error)
    assert "key 'maintenance_ration'" in str(error)


@pytest.mark.parametrize("line,key", [("reporting_lei = 12345", "reporting_lei"),
                                      ("collateralisation_category = true", "collateralisation_category"),
                                      ("max_quarantined_position_share = \"1%\"", "max_quarantined_position_share"),
                                      ("max_quarantined_position_share = 1.5", "max_quarantined_position_share"),
                                      ("max_quarantined_position_share = -0.1", "max_quarantined_position_share")])
def test_policy_value_of_the_wrong_type_or_range_names_the_key(book, line, key):
    (book / "reference" / "policy.toml").write_text(line + "\n")
    assert structural(book).column == key


def test_non_utf8_policy_is_structural_naming_the_file(book):
    policy = book / "reference" / "policy.toml"
    policy.write_bytes(policy.read_bytes() + b'collateralisation_category = "\xff\xfe"\n')
    error = structural(book)
    assert error.file == str(policy) and "not UTF-8" in error.reason


def test_policy_defaults_include_the_guard_limit(tmp_path):
    empty = tmp_path / "policy.toml"
    empty.write_text("")
    assert read_policy(empty)["max_quarantined_position_share"] == 0.01


def test_extra_column_of_an_unsupported_type_is_ignored(book):
    path = book / f"date={AS_OF}" / "positions.parquet"
    table = pq.read_table(path)
    notes = pa.array([decimal.Decimal("1.5")] * table.num_rows, pa.decimal256(76, 2))
    pq.write_table(table.append_column("notes", notes), path)
    loaded = load_inputs(book, AS_OF)
    assert loaded.margin_inputs.positions.collect().height == table.num_rows


def test_a_contract_column_of_an_unsupported_type_names_the_column(book):
    path = book / f"date={AS_OF}" / "positions.parquet"
    table = pq.read_table(path)
    quantity = pa.array([decimal.Decimal("1.5")] * table.num_rows, pa.decimal256(76, 2))
    pq.write_table(table.set_column(table.schema.get_field_index("quantity"), "quantity", quantity), path)
    assert structural(book).column == "quantity"


def test_a_date_level_table_that_is_a_folder_is_structural(book):
    """Not a silent fall back to reference/: the day meant to override it."""
    (book / f"date={AS_OF}" / "risk_params.parquet").mkdir()
    error = structural(book)
    assert error.file == str(book / f"date={AS_OF}" / "risk_params.parquet") and "a folder" in error.reason


def test_db_that_is_a_parquet_file_fails_before_computing(book, tmp_path):
    db = book / f"date={AS_OF}" / "prices.parquet"
    before = db.read_bytes()
    with pytest.raises(RunFailed, match="is a Parquet file, not a DuckDB warehouse"):
        run_end_of_day(AS_OF, book, db, use_tasks=False)
    assert db.read_bytes() == before
    assert not db.with_name(db.name + ".results").exists()  # nothing computed or saved


DAMAGED_LINES = [
    '{"as_of_date": "2025-03-14", "status": "failed"}',  # no run_id
    '{"run_id": "torn-2025-03-14", "as_of_date": "2025-03-14", "sta',  # cut short by a kill
    "this is not json",
    "[1, 2, 3]",
    '{"run_id": "bad-date", "as_of_date": "14/03/2025", "status": "failed"}',
    '{"run_id": "bad-status", "as_of_date": "2025-03-14", "status": 7}',
    '{"run_id": "bytes", "status": "failed", "error": "\xff"}',
]


def test_damaged_run_log_lines_are_set_aside_and_never_block_a_run(book, tmp_path):
    db = tmp_path / "warehouse.duckdb"
    log = warehouse.run_log_for(db)
    good = {"run_id": "earlier-run", "as_of_date": "2025-03-13", "started_at": "2025-03-13T18:30:00+00:00",
            "finished_at": "2025-03-13T18:31:00+00:00", "status": "failed", "error": "x", "code_version": "v"}
    log.write_bytes(("\n".join(DAMAGED_LINES[:-1]) + "\n" + json.dumps(good) + "\n").encode() + b'{"run_id": "\xff\n'
                    + DAMAGED_LINES[1].encode())  # ends torn, without a newline
    record = run_end_of_day(AS_OF, book, db, use_tasks=False)
    assert record["status"] == "succeeded"
    con = duckdb.connect(str(db), read_only=True)
    try:
        runs = dict(con.sql("SELECT run_id, status FROM runs").fetchall())
    finally:
        con.close()
    assert runs == {"earlier-run": "failed", record["run_id"]: "succeeded"}
    rejected = [json.loads(line) for line in warehouse.rejected_log_for(db).read_text().splitlines()]
    assert len(rejected) == 8 and {r["reason"] for r in rejected} >= {"no run_id", "not a JSON object",
                                                                        "status is not text"}
    assert log.read_text() == ""  # everything either loaded or set aside


def test_a_torn_last_line_does_not_swallow_the_next_record(tmp_path):
    db = tmp_path / "warehouse.duckdb"
    warehouse.run_log_for(db).write_text('{"run_id": "torn", "sta')
    warehouse.append_run_log(db, {"run_id": "next", "as_of_date": "2025-03-14", "status": "failed"})
    records = warehouse.pending_run_records(db)
    assert [r["run_id"] for r in records] == ["next"]


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_a_bad_lock_timeout_setting_is_one_line(monkeypatch, value):
    monkeypatch.setenv(warehouse.LOCK_TIMEOUT_ENV, value)
    with pytest.raises(ValueError, match=f"{warehouse.LOCK_TIMEOUT_ENV}='{value}' is not a number of seconds"):
        warehouse.default_lock_timeout()

"""Security (issue 7): the read-only console cannot change the warehouse, exports cannot
write outside ``--out``, and user input never becomes SQL text.

The warehouse is book A published once (in-process, no Prefect).  "Intact" means the
warehouse file is byte-for-byte what it was (a read-only DuckDB connection writes
nothing), so a statement cannot have changed anything, however it failed.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import shutil
from pathlib import Path

import duckdb
import pytest

from conftest import EXAMPLES, PROJECT_ROOT, margin_cli
from flows.eod import run_end_of_day
from outputs.sql_console import run_read_only_query

AS_OF = dt.date(2025, 3, 14)
HOSTILE = "o'brien\"; DROP TABLE runs; --"  # a folder name that breaks any SQL pasted together from paths


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    """Book A published under a folder whose name is hostile SQL (paths are never pasted into SQL)."""
    root = tmp_path_factory.mktemp("security") / HOSTILE
    inputs = root / "inputs"
    shutil.copytree(EXAMPLES / "book_a_12_accounts" / "inputs", inputs)
    db = root / "warehouse.duckdb"
    record = run_end_of_day(AS_OF, inputs, db, use_tasks=False)
    assert record["status"] == "succeeded"
    return db


def test_hostile_paths_run_and_publish(warehouse):
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        assert con.sql("SELECT count(*) FROM runs WHERE status = 'succeeded'").fetchall() == [(1,)]
        assert con.sql("SELECT count(*) FROM account_margin").fetchall()[0][0] > 0
    finally:
        con.close()


# ------------------------------------------------------------------ margin sql

MODIFYING = {
    "insert": "INSERT INTO runs (run_id, status) VALUES ('forged', 'succeeded')",
    "update": "UPDATE account_margin SET im = 0",
    "delete": "DELETE FROM account_margin",
    "drop": "DROP TABLE runs",
    "create": "CREATE TABLE stolen AS SELECT * FROM account_margin",
    "alter": "ALTER TABLE runs ADD COLUMN note VARCHAR",
    "truncate": "TRUNCATE account_margin",
    "create view": "CREATE VIEW v_evil AS SELECT 1",
    "attach file": "ATTACH '{tmp}/other.duckdb' AS other",
    "attach memory then write": "ATTACH ':memory:' AS scratch",
    "detach": "DETACH warehouse",
    "copy to": "COPY account_margin TO '{tmp}/leak.csv'",
    "copy from": "COPY account_margin FROM '{tmp}/leak.csv'",
    "export database": "EXPORT DATABASE '{tmp}/dump'",
    "read a file": "SELECT * FROM read_csv('/etc/passwd')",
    "read text": "SELECT * FROM read_text('/etc/hostname')",
    "glob": "SELECT * FROM glob('/*')",
    "re-enable files": "SET enable_external_access = true",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "checkpoint": "CHECKPOINT",  # accepted as a no-op on a read-only file: must still change nothing
    "vacuum": "VACUUM",
    "multi-statement": "SELECT 1; DROP TABLE runs",
    "multi-statement insert": "SELECT count(*) FROM runs; INSERT INTO runs (run_id) VALUES ('x')",
    "pragma": "PRAGMA enable_checkpoint_on_shutdown",
}


@pytest.mark.parametrize("statement", list(MODIFYING.values()), ids=list(MODIFYING))
def test_sql_console_cannot_modify_or_escape(warehouse, tmp_path, statement):
    before = sha256(warehouse)
    statement = statement.format(tmp=tmp_path)
    if statement == "CHECKPOINT":
        run_read_only_query(warehouse, statement)
    else:
        with pytest.raises(Exception) as caught:
            run_read_only_query(warehouse, statement)
        assert str(caught.value).strip()
    assert sha256(warehouse) == before
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing attached


def test_sql_console_still_answers_queries(warehouse):
    output = run_read_only_query(warehouse, "SELECT count(*) AS accounts FROM account_margin", "csv")
    assert output.splitlines()[0] == "accounts" and int(output.splitlines()[1]) > 0


@pytest.mark.parametrize("statement", [MODIFYING["drop"], MODIFYING["multi-statement"], MODIFYING["copy to"]])
def test_margin_sql_command_refuses_in_one_line(warehouse, tmp_path, statement):
    before = sha256(warehouse)
    result = margin_cli("sql", statement.format(tmp=tmp_path), "--db", str(warehouse))
    assert result.returncode != 0
    assert result.stderr.startswith("margin: error:") and result.stderr.strip().count("\n") == 0, result.stderr
    assert sha256(warehouse) == before
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------- exports


def test_export_date_injection_is_refused_and_harmless(warehouse, tmp_path):
    before = sha256(warehouse)
    out = tmp_path / "out"
    result = margin_cli("export", "--date", "2025-03-14'; DROP TABLE runs; --", "--format", "csv",
                        "--out", str(out), "--db", str(warehouse))
    assert result.returncode != 0
    assert result.stderr.startswith("margin: error:") and result.stderr.strip().count("\n") == 0, result.stderr
    assert sha256(warehouse) == before
    assert not out.exists()


def test_export_file_names_from_data_stay_inside_out(tmp_path):
    """The reporting LEI (data, from policy.toml) becomes part of the EMIR file name; a
    hostile one is sanitised, and nothing is written outside --out."""
    root = tmp_path / "book"
    inputs = root / "inputs"
    shutil.copytree(EXAMPLES / "book_a_12_accounts" / "inputs", inputs)
    (inputs / "reference" / "policy.toml").write_text('reporting_lei = "../../../escaped/../evil\\\\x"\n')
    db = root / "warehouse.duckdb"
    run_end_of_day(AS_OF, inputs, db, use_tasks=False)
    out = tmp_path / "exports" / "today"
    before = files_under(tmp_path)
    for fmt in ("emir-csv",):  # the EMIR file names carry the reporting LEI, i.e. data
        result = margin_cli("export", "--date", AS_OF.isoformat(), "--format", fmt, "--out", str(out),
                            "--db", str(db), "--inputs", str(inputs), "--allow-partial",
                            "--reporting-time", "2025-03-14T18:00:00Z")
        assert result.returncode in (0, 1), result.stderr
    after = files_under(tmp_path)
    written = {name for name in after if name not in before or after[name] != before[name]}
    assert written, "the exports wrote nothing"
    for name in written:
        assert (tmp_path / name).resolve().parent == out.resolve(), f"{name} written outside --out"
    assert not (tmp_path / "escaped").exists() and not Path("/escaped").exists()


# -------------------------------------------------- no SQL pasted from user input

#: Reviewed f-string SQL in flows/: every interpolated name is a table or key list from a
#: module constant, never a value from the user or the data.  A new one fails this test
#: until it is reviewed and added here (values belong in ``params=[...]``).
REVIEWED_SQL_INTERPOLATIONS = {
    ("warehouse.py", "table"),  # publish_date: for table in RESULT_TABLES
    ("warehouse.py", "rows"),  # publish_date: one of two literal sources; the file paths are a $files parameter
    ("exports.py", "table"),  # extract_frame: table in EXTRACT_TABLES
    ("exports.py", "keys"),  # extract_frame: ", ".join(EXTRACT_KEYS[table])
    ("report.py", "name"),  # the file name of a committed sql/reports/*.sql query, not SQL text
}


def _sql_interpolations(source: str, file_name: str) -> set[tuple[str, str]]:
    """(file, interpolated expression) of every f-string given to ``.execute`` / ``.sql`` / ``query``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name not in ("execute", "sql", "query", "executemany"):
            continue
        for argument in node.args[:2]:
            for part in ast.walk(argument):
                if isinstance(part, ast.JoinedStr):
                    for value in part.values:
                        if isinstance(value, ast.FormattedValue):
                            found.add((file_name, ast.unparse(value.value)))
                elif isinstance(part, ast.BinOp) and isinstance(part.op, ast.Mod) and isinstance(part.left, ast.Constant):
                    found.add((file_name, "%-format"))
                elif isinstance(part, ast.Call) and getattr(part.func, "attr", "") == "format":
                    found.add((file_name, ".format()"))
    return found


def test_no_sql_text_built_from_values():
    found = set()
    for path in sorted((PROJECT_ROOT / "flows").glob("*.py")):
        found |= _sql_interpolations(path.read_text(), path.name)
    assert found <= REVIEWED_SQL_INTERPOLATIONS, f"unreviewed SQL built by string formatting: {found - REVIEWED_SQL_INTERPOLATIONS}"


def test_interpolation_finder_is_not_blind():
    source = (
        'con.execute(f"DELETE FROM runs WHERE run_id = \'{run_id}\'")\n'
        'con.sql("SELECT * FROM t WHERE d = \'%s\'" % day)\n'
        'warehouse.query(db, "SELECT {}".format(column))\n'
        'con.sql("SELECT * FROM t WHERE d = ?", params=[day])\n'
    )
    assert _sql_interpolations(source, "x.py") == {("x.py", "run_id"), ("x.py", "%-format"), ("x.py", ".format()")}

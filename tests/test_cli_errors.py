"""Every ``margin`` command, driven with bad arguments and bad paths: one line on stderr
(``margin: error: …``), a non-zero exit, never a traceback.

The cases run in forked children of one process that imported ``flows.cli`` once
(``margin`` itself, with ``sys.argv`` set), so the catalogue costs seconds, not a
Python start per case.  ``MARGIN_ORCHESTRATION=none``: no Prefect server is started.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from conftest import EXAMPLES, PROJECT_ROOT

AS_OF = "2025-03-14"
BOOK = "book_a_12_accounts"

DRIVER = r"""
import json, os, sys
cases = json.loads(sys.stdin.read())
from flows import cli
results = []
for argv in cases:
    import time; started = time.monotonic()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(out_w, 1); os.dup2(err_w, 2)
        sys.argv = ["margin", *argv]
        code = 0
        try:
            cli.main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException:
            import traceback; traceback.print_exc(); code = 99
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    os.close(out_w); os.close(err_w)
    def drain(fd):
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(fd)
        return b"".join(chunks).decode("utf-8", "replace")
    # stderr first is safe: outputs here are small (the pipes' buffers hold them)
    stderr = drain(err_r); stdout = drain(out_r)
    _, status = os.waitpid(pid, 0)
    results.append({"argv": argv, "code": os.waitstatus_to_exitcode(status), "stderr": stderr, "stdout": stdout, "seconds": round(time.monotonic() - started, 1)})
print(json.dumps(results))
"""


def run_cases(cases: list[list[str]], env: dict[str, str]) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-c", DRIVER], input=json.dumps(cases), cwd=PROJECT_ROOT, capture_output=True, text=True,
        env={**os.environ, "MARGIN_ORCHESTRATION": "none", "MARGIN_QUIET": "1", **env}, timeout=900,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> dict[str, Path]:
    """A published book A, and the bad paths an operator might give."""
    from flows.eod import run_end_of_day

    root = tmp_path_factory.mktemp("cli-errors")
    inputs = root / "inputs"
    shutil.copytree(EXAMPLES / BOOK / "inputs", inputs)
    db = root / "warehouse.duckdb"
    run_end_of_day(dt.date.fromisoformat(AS_OF), inputs, db, use_tasks=False)
    afile = root / "afile"
    afile.write_text("not a folder")
    folder = root / "a-folder"
    folder.mkdir()
    parquet = root / "prices-copy.parquet"
    shutil.copy(inputs / f"date={AS_OF}" / "prices.parquet", parquet)
    # Export inputs: a corrupt and a mistyped variation_margin.parquet, a policy with a number as LEI
    corrupt_vm = root / "corrupt-vm"
    shutil.copytree(inputs, corrupt_vm)
    (corrupt_vm / f"date={AS_OF}" / "variation_margin.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    typed_vm = root / "typed-vm"
    shutil.copytree(inputs, typed_vm)
    pl.DataFrame({"account_id": ["ACC0001"], "vm_collected_usd": ["lots"]}).write_parquet(
        typed_vm / f"date={AS_OF}" / "variation_margin.parquet")
    folder_vm = root / "folder-vm"
    shutil.copytree(inputs, folder_vm)
    (folder_vm / f"date={AS_OF}" / "variation_margin.parquet").mkdir()
    lei_12345 = root / "lei-12345"
    shutil.copytree(inputs, lei_12345)
    (lei_12345 / "reference" / "policy.toml").write_text("reporting_lei = 12345\n")
    return {"root": root, "inputs": inputs, "db": db, "afile": afile, "folder": folder, "parquet": parquet,
            "corrupt_vm": corrupt_vm, "typed_vm": typed_vm, "folder_vm": folder_vm, "lei_12345": lei_12345,
            "missing": root / "no-such" / "thing"}


def bad_invocations(p: dict[str, Path]) -> list[list[str]]:
    db, inputs, afile, folder, parquet, missing = (str(p[k]) for k in ("db", "inputs", "afile", "folder", "parquet",
                                                                          "missing"))
    run = ["run", "--date", AS_OF, "--inputs", inputs, "--no-summary"]
    return [
        # demo / generate
        ["demo", "--accounts", "0"], ["demo", "--days", "0"], ["demo", "--start", "2025-02-30"],
        ["demo", "--accounts", "many"], ["demo", "--accounts", "1", "--days", "1", "--inputs", f"{afile}/sub"],
        ["demo", "--accounts", "1", "--days", "1", "--inputs", str(p["root"] / "demo-in"), "--db", parquet],
        ["generate", "--date", "2025-3-14x"], ["generate", "--date", AS_OF, "--accounts", "0"],
        ["generate", "--date", AS_OF, "--accounts", "-5"], ["generate", "--date", AS_OF, "--days", "0"],
        ["generate", "--date", AS_OF, "--out", f"{afile}/sub"], ["generate", "--date", AS_OF, "--out", afile],
        # run / backfill / publish
        ["run", "--date", "2025-02-30"], ["run", "--date", "today"], ["run", "--date", "14/03/2025"],
        ["run", "--date", "0001-01-01", "--inputs", inputs, "--db", db],
        ["run", "--date", "9999-12-31", "--inputs", inputs, "--db", db],
        [*run, "--db", parquet], [*run, "--db", folder], [*run, "--db", f"{afile}/sub.duckdb"],
        [*run, "--db", db, "--partitions", "0"], [*run, "--db", db, "--partitions", "-3"],
        [*run, "--db", db, "--partitions", "many"],
        [*run, "--db", db, "--max-quarantined-share", "2"], [*run, "--db", db, "--lock-timeout", "soon"],
        [*run, "--db", db, "--lock-timeout", "nan"], [*run, "--db", db, "--lock-timeout", "-1"],
        ["publish", "--date", AS_OF, "--db", db, "--lock-timeout", "nan"],
        ["run", "--date", AS_OF, "--inputs", missing, "--db", db], ["run", "--date", AS_OF, "--inputs", afile, "--db", db],
        ["run", "--date", AS_OF, "--inputs", str(p["lei_12345"]), "--db", db, "--no-summary"],
        ["backfill", "--start", "2025-03-14", "--end", "2025-03-01", "--inputs", inputs, "--db", db],
        ["backfill", "--start", "x", "--end", AS_OF], ["backfill", "--start", "2020-01-01", "--end", "2020-01-31",
                                                       "--inputs", inputs, "--db", db],
        ["backfill", "--start", AS_OF, "--end", AS_OF, "--inputs", inputs, "--db", parquet],
        ["publish", "--date", "2024-01-01", "--db", db], ["publish", "--date", AS_OF, "--db", parquet],
        ["publish", "--date", AS_OF, "--db", folder], ["publish", "--date", "someday", "--db", db],
        # sql
        ["sql", "select * from nosuch", "--db", db], ["sql", "select 1", "--db", missing],
        ["sql", "select 1", "--db", parquet], ["sql", "select 1", "--db", folder], ["sql", "select 1", "--db", db,
                                                                                      "--format", "xml"],
        ["sql", "drop table runs", "--db", db], ["sql", "", "--db", db],
        # serve (fails before serving)
        ["serve", "--at", "25:00"], ["serve", "--timezone", "Mars/Olympus"], ["serve", "--cron", "every day"],
        # report
        ["report", "--date", AS_OF, "--db", db, "--out", str(p["folder"])],
        ["report", "--date", AS_OF, "--db", db, "--out", f"{afile}/sub/report.html"],
        ["report", "--date", "2024-01-01", "--db", db], ["report", "--date", AS_OF, "--db", missing],
        ["report", "--date", AS_OF, "--db", parquet], ["report", "--date", "31-12-2025", "--db", db],
        # export
        ["export", "--date", AS_OF, "--format", "csv", "--db", db, "--out", f"{afile}/sub"],
        ["export", "--date", AS_OF, "--format", "csv", "--db", db, "--out", afile],
        ["export", "--date", AS_OF, "--format", "pdf", "--db", db, "--out", folder],
        ["export", "--date", AS_OF, "--format", "csv", "--db", missing, "--out", folder],
        ["export", "--date", AS_OF, "--format", "csv", "--db", parquet, "--out", folder],
        ["export", "--date", "2024-01-01", "--format", "csv", "--db", db, "--out", folder],
        ["export", "--date", AS_OF, "--format", "csv", "--db", db, "--out", folder, "--reporting-time", "noon"],
        *[["export", "--date", AS_OF, "--format", "emir-csv", "--db", db, "--out", folder, "--allow-partial",
           "--inputs", str(p[k])] for k in ("corrupt_vm", "typed_vm", "folder_vm")],
    ]


def commands() -> list[str]:
    from flows.cli import app

    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    return names + [g.name for g in app.registered_groups if g.name]


def test_every_command_fails_in_one_line(place):
    cases = bad_invocations(place) + [[name, "--no-such-option"] for name in commands()]
    results = run_cases(cases, env={"MARGIN_LOCK_TIMEOUT": "5"})
    problems = []
    for result in results:
        lines = [line for line in result["stderr"].splitlines() if line.strip()]
        # one error line; only DuckDB's own hint lines ("Did you mean …"), indented, may follow it (margin sql)
        hints_only = all(line.startswith("  ") for line in lines[1:]) and (len(lines) == 1 or result["argv"][0] == "sql")
        ok = (result["code"] not in (0, 99) and lines and hints_only and lines[0].startswith("margin: error: ")
              and "Traceback" not in result["stderr"] and "unexpected" not in lines[0])
        if not ok:
            problems.append(f"margin {' '.join(result['argv'])} → exit {result['code']}:\n{result['stderr'][-600:]}")
    assert not problems, "\n\n".join(problems)
    # and nothing was written where it must not be
    assert place["afile"].read_text() == "not a folder"
    assert list(place["folder"].iterdir()) == []


def test_export_never_writes_through_a_symlink_named_like_its_temporary_file(place, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    name = f"account_margin_{AS_OF}.csv"
    for decoy in (f"{name}.partial", f".{name}.partial", f"manifest_csv_{AS_OF}.json.partial"):
        (out / decoy).symlink_to(outside / decoy)
    (results,) = run_cases([["export", "--date", AS_OF, "--format", "csv", "--db", str(place["db"]), "--out",
                             str(out)]], env={})
    assert results["code"] == 0, results["stderr"]
    assert list(outside.iterdir()) == []  # nothing written through the decoys
    written = sorted(p.name for p in out.iterdir() if not p.is_symlink())
    assert name in written and all(not n.endswith(".partial") for n in written)

"""Opening the warehouse file: refuse what is not DuckDB, wait a bounded time for a lock.

Kept apart from ``flows.warehouse`` (publish, run history) so that read-only commands
such as ``margin sql`` open the warehouse without importing Polars.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import duckdb

from flows.settings import default_lock_timeout

CONNECTION_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}

class WarehouseLocked(RuntimeError):
    """Another process holds the warehouse file past the lock timeout."""


class NotAWarehouse(ValueError):
    """``--db`` names something that exists and is not a DuckDB database file."""


#: Bytes 8-11 of every DuckDB database file.
DUCKDB_MAGIC = b"DUCK"


def check_warehouse_file(db_path: Path) -> None:
    """Refuse a ``--db`` that exists and is not a DuckDB file (a Parquet file, a folder, a
    report …): DuckDB 2 would open a Parquet file as a read-only database and the run
    would say it published while nothing was saved.  A path that does not exist is a new
    warehouse."""
    db_path = Path(db_path)
    if not db_path.exists():
        return
    if db_path.is_dir():
        raise NotAWarehouse(f"--db {db_path} is a folder, not a DuckDB warehouse file")
    try:
        with open(db_path, "rb") as handle:
            header = handle.read(12)
    except OSError as error:
        raise NotAWarehouse(f"--db {db_path} cannot be read ({error.strerror or error})") from error
    if header[8:12] != DUCKDB_MAGIC:
        what = "a Parquet file" if header[:4] == b"PAR1" else "an empty file" if not header else "not a DuckDB file"
        raise NotAWarehouse(f"--db {db_path} is {what}, not a DuckDB warehouse (give a new or existing warehouse file)")


def _is_lock_error(error: Exception) -> bool:
    text = str(error)
    return "lock" in text.lower() and ("Conflicting" in text or "Could not set lock" in text)


def connect(db_path: Path, *, read_only: bool = False, lock_timeout: float | None = None) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, retrying while another process holds a conflicting lock.

    ``lock_timeout`` seconds (default ``MARGIN_LOCK_TIMEOUT`` or 60) bound the wait;
    then ``WarehouseLocked`` says who holds it.
    """
    db_path = Path(db_path)
    check_warehouse_file(db_path)
    timeout = default_lock_timeout() if lock_timeout is None else lock_timeout
    timeout = timeout if timeout >= 0 else 0.0  # NaN or negative: one attempt (NaN would wait forever)
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        try:
            return duckdb.connect(str(db_path), read_only=read_only, config=dict(CONNECTION_CONFIG))
        except duckdb.IOException as error:
            if not _is_lock_error(error):
                raise
            if time.monotonic() >= deadline:
                holder = re.search(r"PID (\d+)", str(error))
                who = f" by PID {holder.group(1)}" if holder else ""
                raise WarehouseLocked(
                    f"warehouse {db_path} is locked{who} (waited {timeout:.0f}s)"
                ) from error
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

"""The one place that knows about environments: paths, the warehouse, Prefect's home.

Everything is overridable by environment variables so tests and operators can point a
run elsewhere without touching business code.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("MARGIN_DATA_DIR", PROJECT_ROOT / "data"))
REFERENCE_DIR = PROJECT_ROOT / "data" / "reference"
SQL_DIR = PROJECT_ROOT / "sql"
DEFAULT_INPUTS = Path(os.environ.get("MARGIN_INPUTS", DATA_DIR / "inputs"))
DEFAULT_DB = Path(os.environ.get("MARGIN_DB", DATA_DIR / "warehouse.duckdb"))
DEFAULT_REPORTS = DATA_DIR / "reports"


#: ``MARGIN_TRACEBACK=1``: an unexpected error of a ``margin`` command shows its traceback
#: (by default it is one line, like every other failure).
SHOW_TRACEBACKS = os.environ.get("MARGIN_TRACEBACK") == "1"


def compute_partitions() -> tuple[int, str | None]:
    """How the compute stage runs: ``MARGIN_PARTITIONS`` margin-group partitions (1 = one
    pass over the whole book) and ``MARGIN_DASK_ADDRESS`` (a Dask scheduler such as
    ``tcp://scheduler:8786`` runs the partitions as Prefect tasks on that cluster;
    ``local`` starts a 2-worker local cluster; unset runs them one after the other here)."""
    partitions = int(os.environ.get("MARGIN_PARTITIONS", "1") or 1)
    return max(partitions, 1), os.environ.get("MARGIN_DASK_ADDRESS") or None


def results_dir_for(db_path: Path) -> Path:
    """Durable per-date Parquet results live beside the warehouse: ``<db>.results/date=D/``."""
    return db_path.with_name(db_path.name + ".results")


def run_log_for(db_path: Path) -> Path:
    """Run records that could not reach the warehouse wait here (JSON lines) for the next publish."""
    return db_path.with_name(db_path.name + ".runs.jsonl")


def run_lock_for(db_path: Path) -> Path:
    """The lock that serialises the runs writing one warehouse (``flows.run_lock``)."""
    return db_path.with_name(db_path.name + ".run.lock")


def configure_prefect() -> None:
    """Offline, quiet Prefect with its home inside the project's data folder (unless set).

    Must run before ``import prefect``.
    """
    os.environ.setdefault("PREFECT_HOME", str(DATA_DIR / ".prefect"))
    try:  # a missing home makes the temporary API server time out after minutes, not fail
        Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # Prefect then says itself that it cannot create its home
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY", "false")
    os.environ.setdefault("PREFECT_API_ENABLE_HTTP2", "false")
    # A failed run's traceback goes to the Prefect run logs (API / UI) and the run
    # record; the console gets the one-line `margin: error: …`.  Set this to ERROR to
    # see Prefect's tracebacks on the console too.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")

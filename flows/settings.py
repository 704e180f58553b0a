"""The one place that reads the environment (``os.environ``): paths, the warehouse,
Prefect's home and settings, the defaults of ``--orchestration`` and ``--lock-timeout``.

Everything is overridable by environment variables so tests and operators can point a
run elsewhere without touching business code.  Every other module takes these values as
parameters (the CLI passes them on) or calls the functions here.
"""

from __future__ import annotations

import math
import os
import sys
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


ORCHESTRATION_ENV = "MARGIN_ORCHESTRATION"
LOCK_TIMEOUT_ENV = "MARGIN_LOCK_TIMEOUT"
FAULT_STAGE_ENV = "MARGIN_FAULT_STAGE"
#: ``MARGIN_QUIET=1``: no progress lines (``flows.progress``).
QUIET = os.environ.get("MARGIN_QUIET") == "1"


def default_orchestration() -> str:
    """``--orchestration`` when not given: ``MARGIN_ORCHESTRATION`` or ``auto`` (SPEC §9)."""
    return (os.environ.get(ORCHESTRATION_ENV) or "auto").strip().lower()


def default_lock_timeout() -> float:
    """Seconds a writer waits for the warehouse lock: ``MARGIN_LOCK_TIMEOUT`` or 60.

    Raises ``ValueError`` (one line) when it is not a number of seconds ≥ 0 (NaN would
    mean waiting forever)."""
    text = os.environ.get(LOCK_TIMEOUT_ENV, "60")
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0:
        raise ValueError(f"{LOCK_TIMEOUT_ENV}={text!r} is not a number of seconds ≥ 0")
    return seconds


def default_partitions() -> str:
    """``--partitions`` when not given: ``MARGIN_PARTITIONS`` or ``auto``."""
    return os.environ.get("MARGIN_PARTITIONS") or "auto"


def default_dask_address() -> str | None:
    """``--dask-address`` when not given: ``MARGIN_DASK_ADDRESS`` (None: the partitions run in this process)."""
    return os.environ.get("MARGIN_DASK_ADDRESS") or None


def fault_stage() -> str | None:
    """Test hook (``MARGIN_FAULT_STAGE``): the stage at which a run kills itself; never set in production."""
    return os.environ.get(FAULT_STAGE_ENV)


def prefect_home() -> Path:
    """Prefect's home (``PREFECT_HOME``; ``data/.prefect`` unless set), created."""
    configure_prefect()
    return Path(os.environ["PREFECT_HOME"]).expanduser()


def prefect_profiles_path() -> Path:
    """Prefect's profiles file: ``PREFECT_PROFILES_PATH`` or ``$PREFECT_HOME/profiles.toml``."""
    return Path(os.environ.get("PREFECT_PROFILES_PATH") or prefect_home() / "profiles.toml").expanduser()


def prefect_api_url_setting() -> str | None:
    """``PREFECT_API_URL`` from the environment (None when unset or empty)."""
    return os.environ.get("PREFECT_API_URL") or None


def prefect_profile_setting() -> str | None:
    """``PREFECT_PROFILE`` from the environment (None when unset or empty)."""
    return os.environ.get("PREFECT_PROFILE") or None


def server_environment(home: Path) -> dict[str, str]:
    """The environment of a ``prefect server start`` child: this one, with ``PREFECT_HOME``
    set to ``home`` and no API URL or profile (the server serves, it is no client)."""
    env = {**os.environ, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_PROFILE", None)
    return env


def results_dir_for(db_path: Path) -> Path:
    """Durable per-date Parquet results live beside the warehouse: ``<db>.results/date=D/``."""
    return db_path.with_name(db_path.name + ".results")


def run_log_for(db_path: Path) -> Path:
    """Run records that could not reach the warehouse wait here (JSON lines) for the next publish."""
    return db_path.with_name(db_path.name + ".runs.jsonl")


def run_lock_for(db_path: Path) -> Path:
    """The lock that serialises the runs writing one warehouse (``flows.run_lock``)."""
    return db_path.with_name(db_path.name + ".run.lock")


#: Polars' allocator (jemalloc) keeps freed memory this long for reuse before it hands
#: it back to the operating system.  Polars' own default (0.5 s dirty, 1 s muzzy) returns
#: each freed column at once, and the next column of a few million rows is faulted in and
#: zeroed again: a 5M-position run spent 4–6 s of its CPU in the kernel doing that.
#: Ten seconds spans the life of a partition's intermediates; the memory still goes back
#: to the system between partitions and after a run (docs/performance.md, "Round 4": at
#: 5M never purging took 0.905× the wall time of Polars' default and 10 s was as fast;
#: one 10M run each 19.3 s against 21.6 s; peak +0.4–0.7 GB).
ALLOCATOR_CONF = "dirty_decay_ms:10000,muzzy_decay_ms:10000"
ALLOCATOR_ENV = "_RJEM_MALLOC_CONF"


def configure_allocator() -> None:
    """Set Polars' jemalloc decay (``ALLOCATOR_CONF``) unless ``_RJEM_MALLOC_CONF`` is set.

    Polars reads it once, when it is first imported, and puts it after its own defaults
    (the later setting wins); once Polars is imported this does nothing.  Only speed and
    peak memory change: every figure is the same to the bit."""
    if "polars" not in sys.modules:
        os.environ.setdefault(ALLOCATOR_ENV, ALLOCATOR_CONF)


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

"""The scheduled deployment: ``eod_margin`` for "today" every weekday at a set time.

``margin serve`` registers the deployment ``eod-margin/<name>`` with a cron schedule
(default ``30 18 * * 1-5`` in UTC) on the Prefect server named by ``PREFECT_API_URL``
and then runs each scheduled flow run in a child process until it is stopped (Ctrl-C /
SIGTERM pauses the schedule).  The as-of date of a scheduled run is the date of its
scheduled start in the configured time zone (``resolve_as_of``).
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flows.settings import configure_prefect

configure_prefect()

DEFAULT_DEPLOYMENT = "weekday-eod"
DEFAULT_AT = "18:30"
DEFAULT_TIMEZONE = "UTC"


class ScheduleError(ValueError):
    """A schedule option that cannot be used; the message is one line."""


def weekday_cron(at: str) -> str:
    """``HH:MM`` → the cron expression for that time Monday to Friday."""
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", at.strip())
    if not match:
        raise ScheduleError(f"--at {at!r} is not a time in HH:MM (24-hour) form")
    hour, minute = int(match.group(1)), int(match.group(2))
    return f"{minute} {hour} * * 1-5"


def check_timezone(timezone: str) -> str:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"--timezone {timezone!r} is not an IANA time zone (e.g. UTC, Europe/London)") from None
    return timezone


def check_cron(cron: str, timezone: str = DEFAULT_TIMEZONE) -> str:
    """Prefect's own validation of the expression (five fields: minute hour day month weekday)."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValueError:
        raise ScheduleError(f"--cron {cron!r} is not a cron expression (minute hour day month weekday)") from None
    return cron


def _terminate_like_ctrl_c(signum, frame) -> None:
    raise KeyboardInterrupt


def deployment_parameters(inputs: Path, db: Path, strict: bool, timezone: str, lock_timeout: float | None) -> dict:
    """JSON-able default parameters of the scheduled runs (absolute paths: runs start in a child process)."""
    return {
        "as_of": "today",
        "timezone": timezone,
        "inputs": str(Path(inputs).resolve()),
        "db": str(Path(db).resolve()),
        "strict": strict,
        "lock_timeout": lock_timeout,
    }


def serve_eod(
    name: str = DEFAULT_DEPLOYMENT,
    at: str = DEFAULT_AT,
    timezone: str = DEFAULT_TIMEZONE,
    cron: str | None = None,
    *,
    inputs: Path,
    db: Path,
    strict: bool = False,
    lock_timeout: float | None = None,
) -> None:
    """Register the scheduled deployment and run its flow runs until stopped (blocks)."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from flows.tasks import eod_margin

    check_timezone(timezone)
    expression = check_cron(cron, timezone) if cron else weekday_cron(at)
    signal.signal(signal.SIGTERM, _terminate_like_ctrl_c)  # until Prefect's runner installs its own
    eod_margin.serve(
        name=name,
        schedule=Cron(expression, timezone=timezone),
        parameters=deployment_parameters(inputs, db, strict, timezone, lock_timeout),
        description=f"End-of-day margin for today ({timezone}) at `{expression}`; writes {Path(db).resolve()}",
        tags=["margin", "end-of-day"],
        limit=1,
        pause_on_shutdown=True,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )

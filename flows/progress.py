"""Console progress for long runs: one line per stage with its timing and row counts."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from flows.settings import QUIET

console = Console(stderr=True, highlight=False)


def say(message: str) -> None:
    """One progress line on stderr, never wrapped (a wrapped line reads as two)."""
    if not QUIET:
        console.print(message, soft_wrap=True)


class StageTimer:
    """Times named stages of a run; ``timings`` feeds the run record."""

    def __init__(self, label: str):
        self.label = label
        self.timings: dict[str, float] = {}
        self._started = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[dict]:
        detail: dict = {}
        start = time.perf_counter()
        try:
            yield detail
        finally:
            elapsed = time.perf_counter() - start
            self.timings[name] = round(self.timings.get(name, 0.0) + elapsed, 4)
            note = f"  {detail['note']}" if detail.get("note") else ""
            say(f"[dim]{self.label}[/dim] {name:<9} {elapsed:7.2f}s{note}")

    @property
    def total(self) -> float:
        return time.perf_counter() - self._started

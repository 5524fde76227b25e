"""One deadline per step: the task's --timeout from when the step starts, and nothing else.

The runner gives each step a Deadline (`ctx.deadline`) and holds it for the
step's thread while its check, apply and wait run. Everything under them ends
by it: each Kubernetes API call (its request timeout), each command kindlab
runs (its timeout), each wait, the retries of transient failures, and Helm's
own `--timeout`. A step that needs more than the task's timeout declares it
once, with the reason (`Step(budget=Longer(...))`); nothing else scales it.
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass
from typing import Iterator

_held = threading.local()


@dataclass(frozen=True)
class Longer:
    """A step's own budget: `factor` times the task's timeout, and why it needs that long."""

    factor: float
    why: str


@dataclass(frozen=True)
class Deadline:
    at: float        # time.monotonic() when the step's time is up
    seconds: float   # its whole budget

    @classmethod
    def after(cls, seconds: float) -> "Deadline":
        return cls(time.monotonic() + seconds, seconds)

    def left(self) -> float:
        """Seconds until the deadline (0 once it has passed)."""
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def bound(self, seconds: float | None) -> float:
        """`seconds` (or, if None, all that is left), but never past the deadline."""
        return self.left() if seconds is None else min(seconds, self.left())

    def flag(self) -> str:
        """A tool's `--timeout` (Helm's, kubectl's) for what is left: whole seconds rounded up, at least
        one (0 is "forever" to kubectl)."""
        return f"{max(1, math.ceil(self.left()))}s"


def current() -> Deadline | None:
    """The deadline of the step this thread runs, if any."""
    return getattr(_held, "deadline", None)


@contextlib.contextmanager
def holding(deadline: Deadline) -> Iterator[Deadline]:
    """Everything this thread runs inside the block ends by `deadline` (an earlier one held stays)."""
    outer = current()
    _held.deadline = deadline if outer is None or deadline.at < outer.at else outer
    try:
        yield _held.deadline
    finally:
        _held.deadline = outer


__all__ = ["Deadline", "Longer", "current", "holding"]

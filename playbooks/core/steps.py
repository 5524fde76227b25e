"""What a step is, and which failures are worth retrying.

A step decides before it acts: `check` is read-only and says whether the
desired state already holds (and what would change if not); `apply` runs only
when it does not; `wait` makes sure the result is real (pods Ready, rollout
complete) and runs after apply and on converged steps alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .commands import CommandError


@dataclass(frozen=True)
class Check:
    """The answer of a read-only check: 'ok' (holds), 'change' (apply needed) or 'skip'."""

    state: str
    detail: str = ""

    @property
    def needs_change(self) -> bool:
        return self.state == "change"


def ok(detail: str = "") -> Check:
    return Check("ok", detail)


def change(detail: str) -> Check:
    return Check("change", detail)


def skip(reason: str) -> Check:
    return Check("skip", reason)


@dataclass
class Step:
    """One idempotent unit of work. Callables receive the StepContext."""

    name: str
    check: Callable[[Any], Check]
    apply: Callable[[Any], str | None] | None = None
    wait: Callable[[Any], str | None] | None = None
    # None: after the step before it in the list (a play reads top to bottom).
    # A tuple: only after these steps, so steps with no path between them run side by side.
    needs: tuple[str, ...] | None = None


class StepFailed(Exception):
    """A permanent failure a user can act on: the message says what and what next."""


class WaitTimeout(StepFailed):
    pass


# Substrings of tool output and API errors that mean "try again later".
TRANSIENT_MARKERS = (
    "connection refused",
    "connection reset",
    "unable to connect to the server",
    "etcdserver: leader changed",
    "etcdserver: request timed out",
    "another operation (install/upgrade/rollback) is in progress",
    "tls handshake timeout",
    "i/o timeout",
    "the server is currently unable to handle the request",
    "too many requests",
    "http2: client connection lost",
    "the object has been modified; please apply your changes to the latest version",
)
# Recognised as permanent even when a transient marker also appears.
PERMANENT_MARKERS = (
    "forbidden",
    "error converting yaml",
    "error parsing",
    "invalid",
    "chart not found",
    "no such host",
)


def is_transient(exc: BaseException) -> bool:
    """True for failures that another attempt may cure; False for everything else."""
    if isinstance(exc, StepFailed):
        return False
    status = getattr(exc, "status", None)  # kubernetes.client.ApiException
    if isinstance(status, int) and status:
        return status == 429 or status >= 500
    if isinstance(exc, CommandError):
        text = exc.output.lower()
    elif isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    else:
        text = f"{type(exc).__name__}: {exc}".lower()
        if any(name in text for name in ("maxretryerror", "protocolerror", "newconnectionerror")):
            return True
    if any(marker in text for marker in PERMANENT_MARKERS):
        return False
    return any(marker in text for marker in TRANSIENT_MARKERS)

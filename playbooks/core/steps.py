"""What a step is, and which failures are worth retrying.

A step decides before it acts: `check` is read-only and says whether the
desired state already holds (and what would change if not); `apply` runs only
when it does not; `wait` makes sure the result is real (pods Ready, rollout
complete) and runs after apply and on converged steps alike.

A check that cannot decide yet (the cluster it would read does not exist in
a dry run) answers `unknown(needs=...)` or raises MissingPrerequisite; any
other exception fails the step. An *action* step (a verification, invoking
the function, the crawl) has nothing to converge: it runs every time, and
reports `changed` when it ran and "would run" under --check.
"""
from __future__ import annotations

import re

from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from .commands import CommandError
from .deadline import Longer


# The words of a step's result, one spelling each: a check answers OK, CHANGED (its apply must run),
# SKIPPED or UNKNOWN; the runner reports OK, CHANGED, SKIPPED, UNKNOWN (a dry run) or FAILED.
OK, CHANGED, SKIPPED, UNKNOWN, FAILED = "ok", "changed", "skipped", "unknown", "failed"


@dataclass(frozen=True)
class Check:
    """The answer of a read-only check: OK (holds), CHANGED (apply needed), SKIPPED, or UNKNOWN
    (cannot tell until something before it exists). `value`: what it decided, for the step's
    `decides` hand-off (a later step receives it)."""

    state: str
    detail: str = ""
    value: Any = None

    @property
    def needs_change(self) -> bool:
        return self.state == CHANGED


def ok(detail: str = "", value: Any = None) -> Check:
    return Check(OK, detail, value)


def change(detail: str) -> Check:
    return Check(CHANGED, detail)


def skip(reason: str, value: Any = None) -> Check:
    return Check(SKIPPED, reason, value)


def unknown(needs: str) -> Check:
    return Check(UNKNOWN, f"needs {needs}")


T = TypeVar("T")
_UNSET = object()


class Handoff(Generic[T]):
    """A value one step decides and later steps receive, typed (an Ansible `register`, read-only after).

    The deciding step has `decides=handoff`: the runner sets it from its check's `value`. A step that
    needs it runs after that step, and reads `handoff.get()`.
    """

    def __init__(self, what: str):
        self.what = what
        self._value: Any = _UNSET

    def set(self, value: T) -> None:
        self._value = value

    def get(self) -> T:
        if self._value is _UNSET:
            raise StepFailed(f"{self.what} was not decided: the step that decides it did not run")
        return self._value

    @property
    def decided(self) -> bool:
        return self._value is not _UNSET


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
    action: bool = False  # `apply` runs every time (check: ok to run, skip or unknown)
    # None: the task's --timeout. A step that needs longer says so once, with why (core/deadline.py).
    budget: Longer | None = None
    decides: "Handoff | None" = None  # set from its check's value, for the steps after it


def action(name: str, run: Callable[[Any], str | None], check: Callable[[Any], Check] | None = None,
           needs: tuple[str, ...] | None = None, budget: Longer | None = None) -> Step:
    """A step that does something every time it runs (verify, invoke, crawl)."""
    return Step(name, check or (lambda ctx: ok()), run, needs=needs, action=True, budget=budget)


class StepFailed(Exception):
    """A permanent failure a user can act on: the message says what and what next."""


class Skipped(Exception):
    """An apply that found it cannot be done here and need not be (an optional tool whose source is
    missing): the step is reported skipped, with this reason."""


class Unreachable(ConnectionError):
    """A service that did not answer (the API server): retried as transient; its message is a
    sentence for the user, printed as it is once the retries are spent."""


class MissingPrerequisite(StepFailed):
    """What a step reads does not exist yet: in a dry run its check is 'unknown', otherwise it fails."""

    def __init__(self, needs: str, message: str | None = None):
        self.needs = needs
        super().__init__(message or f"needs {needs}")


_MISSING_CONTEXT = re.compile(r'context "?([\w.:@-]+)"? (?:does not exist|was not found)|'
                              r'(?:no context exists with the name|context was not found for specified context):? '
                              r'"?([\w.:@-]+)')


def missing_prerequisite(exc: BaseException) -> str | None:
    """What is missing when a check failed because something before it was not made yet, else None."""
    if isinstance(exc, MissingPrerequisite):
        return exc.needs
    if isinstance(exc, CommandError):
        found = _MISSING_CONTEXT.search(exc.output)
        if found:
            return f"the cluster of context {found.group(1) or found.group(2)}"
        argv = list(exc.argv)
        if "--kubeconfig" in argv and argv.index("--kubeconfig") + 1 < len(argv):
            path = argv[argv.index("--kubeconfig") + 1]
            if f"{path}: no such file" in exc.output:  # the kubeconfig itself is not written yet
                context = argv[argv.index("--context") + 1] if "--context" in argv[:-1] else "the lab's"
                return f"the cluster of context {context}"
    return None


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

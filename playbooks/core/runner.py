"""The runner: check -> apply (only when needed) -> wait, with retries and a recap.

Steps whose `needs` are met run side by side (like helmfile's `needs`); a step
whose needs failed or were skipped is skipped with that reason. Each finished
step prints `ok` / `changed` / `failed` / `skipped` with its time; the recap at
the end counts every step once.
"""
from __future__ import annotations

import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait as wait_futures
from dataclasses import dataclass
from typing import Callable, Sequence

import tenacity
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import deadline as deadlines
from .commands import CommandError
from .deadline import Deadline
from .settings import Lab
from .steps import (CHANGED, FAILED, OK, SKIPPED, UNKNOWN, Check, Skipped, Step, StepFailed, Unreachable, is_transient, missing_prerequisite,
                    unknown)

_ELAPSED = re.compile(r"\s*\(\d+s\)$")
STYLES = {OK: "green", CHANGED: "yellow", UNKNOWN: "magenta", FAILED: "bold red", SKIPPED: "cyan"}


@dataclass(frozen=True)
class Outcome:
    step: str
    status: str  # OK | CHANGED | UNKNOWN (check mode) | FAILED | SKIPPED (core/steps.py)
    seconds: float
    detail: str = ""
    action: bool = False  # an action step: `changed` says it ran, not that the lab changed


class Reporter:
    """Prints step results, shows what running steps are waiting for, prints the recap."""

    def __init__(self, console: Console | None = None, live: bool | None = None):
        self.console = console or Console(highlight=False)
        self.live_enabled = self.console.is_terminal if live is None else live
        self._running: dict[str, tuple[float, str]] = {}
        self._last_print: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._live: Live | None = None

    # --- running steps -------------------------------------------------
    def __enter__(self):
        if self.live_enabled:
            self._live = Live(self._render(), console=self.console, refresh_per_second=8,
                              transient=True, get_renderable=self._render)
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        if self._live:
            self._live.__exit__(*exc)
            self._live = None

    def _render(self):
        table = Table.grid(padding=(0, 1))
        now = time.monotonic()
        with self._lock:
            running = list(self._running.items())
        for name, (started, msg) in running:
            spinner = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"[int(now * 8) % 10]
            table.add_row(Text(spinner, style="magenta"), Text(name, style="bold"),
                          Text(f"{now - started:5.1f}s", style="dim"), Text(msg, style="dim"))
        return table

    def started(self, name: str) -> None:
        with self._lock:
            self._running[name] = (time.monotonic(), "checking")

    def progress(self, name: str, message: str) -> None:
        with self._lock:
            if name in self._running:
                self._running[name] = (self._running[name][0], message)
        if self.live_enabled:
            return
        # Without a terminal: print what a step waits for when it changes, or every 10 s.
        last = self._last_print.get(name)
        now = time.monotonic()
        gist = _ELAPSED.sub("", message)  # "(12s)" alone is no news
        if last is None or last[0] != gist or now - last[1] >= 10:
            self._last_print[name] = (gist, now)
            self.console.print(f"  [dim]… {name}: {message}[/dim]")

    def finished(self, outcome: Outcome) -> None:
        with self._lock:
            self._running.pop(outcome.step, None)
        style = STYLES[outcome.status]
        line = Text.assemble((f"{outcome.status:<8}", style), (outcome.step, "bold"),
                             (f"  ({outcome.seconds:.1f}s)", "dim"))
        if outcome.detail:
            line.append(f"\n          {outcome.detail}", style="red" if outcome.status == FAILED else "dim")
        self.console.print(line)

    def note(self, message: str) -> None:
        self.console.print(message)

    def recap(self, title: str, outcomes: Sequence[Outcome], seconds: float) -> None:
        """Every step of the play with its status and its own time, then the counts."""
        counts = {status: sum(1 for o in outcomes if o.status == status) for status in STYLES}
        parts = [Text(f"{status}={counts[status]}", style=STYLES[status] if counts[status] else "dim")
                 for status in STYLES]
        actions = sum(1 for o in outcomes if o.status == CHANGED and o.action)
        if actions:  # a converged lab still verifies itself: say which changes were only actions run
            parts[1].append(f" ({actions} action{'s' if actions > 1 else ''})")
        self.console.print(Text(f"\nPLAY RECAP {title} ".ljust(60, "*"), style="bold"))
        for o in outcomes:
            self.console.print(Text.assemble(("  ", ""), (f"{o.status:<8}", STYLES[o.status]), (o.step, ""),
                                             (f"  {o.seconds:.1f}s", "dim")))
        self.console.print(Text("  ").join(parts) + Text(f"   in {seconds:.1f}s", style="dim"))


class StepContext:
    """What a step's callables get: the lab, the shell, the Kubernetes client, `say`."""

    def __init__(self, lab: Lab, shell, kube_factory: Callable[[], object] | None = None,
                 reporter: Reporter | None = None, step: str = "", shared: dict | None = None,
                 deadline: Deadline | None = None):
        self.lab = lab
        self.sh = shell
        self._kube_factory = kube_factory
        self.reporter = reporter
        self.step = step
        # the step's time: set by the runner when the step starts (core/deadline.py)
        self.deadline = deadline or Deadline.after(lab.timeout)
        self.shared = shared if shared is not None else {"lock": threading.Lock(),
                                                         "cancel": threading.Event()}

    @property
    def kube(self):
        with self.shared["lock"]:
            if "kube" not in self.shared:
                if self._kube_factory is None:
                    raise StepFailed("this step needs a Kubernetes client but none was configured")
                self.shared["kube"] = self._kube_factory()
            return self.shared["kube"]

    def reset_kube(self) -> None:
        """Forget the client (the cluster was just created or deleted)."""
        with self.shared["lock"]:
            self.shared.pop("kube", None)

    @property
    def cancelled(self) -> threading.Event:
        return self.shared["cancel"]

    def say(self, message: str) -> None:
        if self.reporter:
            self.reporter.progress(self.step, message)

    def for_step(self, step: Step) -> "StepContext":
        """The context of one step, its deadline starting now: the task's timeout, or the step's own budget."""
        seconds = self.lab.timeout * (step.budget.factor if step.budget else 1)
        return StepContext(self.lab, self.sh, self._kube_factory, self.reporter, step.name, self.shared,
                           Deadline.after(seconds))


class PlayFailed(Exception):
    def __init__(self, outcomes: Sequence[Outcome]):
        self.outcomes = list(outcomes)
        failed = [o for o in outcomes if o.status == FAILED]
        super().__init__("; ".join(f"{o.step}: {o.detail}" for o in failed) or "play failed")


class Interrupted(StepFailed):
    """The play was interrupted (Ctrl-C) while this step ran."""


def _retrying(lab: Lab, ctx: StepContext, sleep: Callable[[float], None]) -> tenacity.Retrying:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception()
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        ctx.say(f"transient error, retry {state.attempt_number}/{lab.retry_attempts - 1} "
                f"in {state.next_action.sleep:.1f}s: {first_line[:120]}")

    backoff = tenacity.wait_exponential(multiplier=lab.retry_initial, max=lab.retry_max)
    return tenacity.Retrying(
        # the attempts, and never past the step's deadline (a stalled API server makes each one slow)
        stop=tenacity.stop_after_attempt(max(1, lab.retry_attempts)) | (lambda state: ctx.deadline.expired()),
        wait=lambda state: min(backoff(state), ctx.deadline.left()),
        retry=tenacity.retry_if_exception(is_transient),
        sleep=lambda seconds: _sleep_unless_cancelled(ctx, sleep, seconds), reraise=True,
        before_sleep=before_sleep)


def _sleep_unless_cancelled(ctx: StepContext, sleep: Callable[[float], None], seconds: float) -> None:
    if sleep is time.sleep:
        ctx.cancelled.wait(seconds)
    else:
        sleep(seconds)
    if ctx.cancelled.is_set():
        raise Interrupted("interrupted (Ctrl-C)")


def _checked(step: Step, ctx: StepContext, retry) -> Check:
    """The step's check; a check that failed for want of something made before it is 'unknown'."""
    try:
        return retry(step.check, ctx)
    except Exception as exc:
        needs = missing_prerequisite(exc)
        if needs is None:
            raise
        return unknown(needs)


def run_step(step: Step, ctx: StepContext, *, check_mode: bool = False,
             sleep: Callable[[float], None] = time.sleep) -> Outcome:
    start = time.monotonic()

    def outcome(status: str, detail: str) -> Outcome:
        return Outcome(step.name, status, time.monotonic() - start, detail, step.action)

    retry = _retrying(ctx.lab, ctx, sleep)
    try:
        with deadlines.holding(ctx.deadline):
            return _run(step, ctx, retry, check_mode, outcome)
    except Skipped as exc:
        return outcome(SKIPPED, str(exc))
    except CommandError as exc:
        return outcome(FAILED, _command_failure(exc, ctx))
    except Exception as exc:
        if isinstance(exc, (StepFailed, Unreachable)):  # their messages are sentences
            return outcome(FAILED, str(exc))
        # API errors and the like: name the step and the error
        return outcome(FAILED, f"{type(exc).__name__}: {exc}")


def _command_failure(exc: CommandError, ctx: StepContext) -> str:
    """A tool's failure; one the step's deadline ended is said so, and a stalled API server named."""
    if not exc.timed_out:
        return str(exc)
    message = f"`{' '.join(exc.argv[:4])} ...` did not finish within the step's {ctx.deadline.seconds:.0f}s"
    if exc.argv and exc.argv[0] in ("kubectl", "helm"):  # they wait on the API server: does it answer?
        try:
            with deadlines.holding(Deadline.after(2.0)):
                stalled = ctx.kube.api_not_ready()
        except Exception as probe:  # noqa: BLE001 - only enriches the message
            stalled = str(probe).splitlines()[0][:160]
        if stalled:
            return f"{message}: the API server of {ctx.lab.context} does not answer ({stalled}): it is down or stalled"
    return f"{message}; give it longer with --timeout"


def _run(step: Step, ctx: StepContext, retry, check_mode: bool, outcome) -> Outcome:
    """check -> apply (only when needed) -> wait, each retried on transient failures within the deadline."""
    result = _checked(step, ctx, retry)
    if step.decides is not None:  # what its check decided, for the steps after it
        step.decides.set(result.value)
    if result.state == SKIPPED:
        return outcome(SKIPPED, result.detail)
    if result.state == UNKNOWN:
        if check_mode:
            return outcome(UNKNOWN, result.detail)
        if step.apply is not None or step.wait is None:
            raise StepFailed(f"cannot be checked: {result.detail}")
        # a step that only waits: its wait finds out
    if check_mode:
        if step.action:
            return outcome(CHANGED, "would run" + (f": {result.detail}" if result.detail else ""))
        if result.needs_change:
            return outcome(CHANGED, f"would change: {result.detail}")
        return outcome(OK, result.detail)
    changes = result.needs_change or step.action
    detail = result.detail
    if changes and step.apply is not None:
        ctx.say(("running" if step.action else "applying") + (f": {result.detail}" if result.detail else ""))
        detail = retry(step.apply, ctx) or result.detail
    if step.wait is not None:
        ctx.say("waiting")
        waited = retry(step.wait, ctx)
        if waited and not changes:
            detail = waited
    return outcome(CHANGED if changes else OK, detail)


def run_play(title: str, steps: Sequence[Step], ctx: StepContext, *, check_mode: bool = False,
             reporter: Reporter | None = None, sleep: Callable[[float], None] = time.sleep,
             max_parallel: int = 4) -> list[Outcome]:
    """Run the steps in dependency order, independent ones concurrently; print a recap.

    Raises PlayFailed (after the recap) when a step failed. On Ctrl-C the
    recap still prints, with the interrupted steps counted as failed.
    """
    reporter = reporter or ctx.reporter or Reporter()
    ctx.reporter = reporter
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate step names in {title}: {names}")
    deps = {}
    for i, s in enumerate(steps):
        explicit = s.needs is not None
        deps[s.name] = (tuple(s.needs) if explicit else tuple(names[i - 1:i]), explicit)
        unknown = [n for n in deps[s.name][0] if n not in names]
        if unknown:
            raise ValueError(f"step {s.name!r} needs unknown step(s) {unknown}")
    outcomes: dict[str, Outcome] = {}
    blocked: set[str] = set()  # failed, or skipped because something they needed failed
    pending = list(steps)
    running: dict = {}  # future -> (step, when it started)
    start = time.monotonic()
    interrupted = False
    pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="kindlab-step")
    with reporter:
        try:
            while pending or running:
                for s in list(pending):
                    needed, explicit = deps[s.name]
                    if any(n not in outcomes for n in needed):
                        continue
                    pending.remove(s)
                    # Explicit needs also wait on a skipped part (no function to invoke
                    # without its build); the implicit "step before" only on a failure.
                    stop = [n for n in needed if n in blocked
                            or (explicit and outcomes[n].status == SKIPPED)]
                    if stop:
                        what = "failed" if outcomes[stop[0]].status == FAILED else "was skipped"
                        outcomes[s.name] = Outcome(s.name, SKIPPED, 0.0, f"needs {stop[0]}, which {what}")
                        if stop[0] in blocked:
                            blocked.add(s.name)
                        reporter.finished(outcomes[s.name])
                        continue
                    reporter.started(s.name)
                    running[pool.submit(run_step, s, ctx.for_step(s), check_mode=check_mode,
                                        sleep=sleep)] = (s, time.monotonic())
                if not running:
                    if pending and all(any(n not in outcomes for n in deps[p.name][0]) for p in pending):
                        raise ValueError(f"steps wait on each other in a cycle: {[p.name for p in pending]}")
                    continue
                # A short timeout keeps the main thread responsive to Ctrl-C (Windows
                # does not interrupt a blocked wait).
                done, _ = wait_futures(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
                for fut in done:
                    s, _ = running.pop(fut)
                    outcomes[s.name] = fut.result()
                    if outcomes[s.name].status == FAILED:
                        blocked.add(s.name)
                    reporter.finished(outcomes[s.name])
        except KeyboardInterrupt:
            interrupted = True
            ctx.cancelled.set()  # retry sleeps return at once
            if hasattr(ctx.shared.get("kube"), "interrupt"):
                ctx.shared["kube"].interrupt()  # and so do the waits
            ctx.sh.close()       # child processes (helm, kubectl, port-forwards) end
            for fut, (s, began) in running.items():
                fut.cancel()
                outcomes[s.name] = Outcome(s.name, FAILED, time.monotonic() - began, "interrupted (Ctrl-C)")
                reporter.finished(outcomes[s.name])
            for s in pending:
                outcomes[s.name] = Outcome(s.name, SKIPPED, 0.0, "never started: interrupted (Ctrl-C)")
        finally:
            # Running steps notice the cancel within a moment; never wait long for them.
            pool.shutdown(wait=not interrupted, cancel_futures=True)
    ordered = [outcomes[n] for n in names if n in outcomes]
    reporter.recap(title, ordered, time.monotonic() - start)
    if interrupted:
        reporter.note("interrupted: rerun the same command to continue where it stopped")
        raise KeyboardInterrupt
    if any(o.status == FAILED for o in ordered):
        raise PlayFailed(ordered)
    return ordered

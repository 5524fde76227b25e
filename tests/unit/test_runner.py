"""The step engine: order, idempotency, check mode, retries, recap, dependencies."""
import io
import sys
import time

import pytest
from rich.console import Console

from playbooks.core.commands import CommandError
from playbooks.core.runner import PlayFailed, Reporter, StepContext, run_play
from playbooks.core.settings import Lab
from playbooks.core.steps import MissingPrerequisite, Step, StepFailed, action, change, ok, skip, unknown


class FakeShell:
    def __init__(self):
        self.closed = False

    def close(self):
        self.closed = True


def make(lab=None):
    out = io.StringIO()
    reporter = Reporter(Console(file=out, width=200, highlight=False), live=False)
    ctx = StepContext(lab or Lab(retry_attempts=4, retry_initial=1.0, retry_max=8.0), FakeShell(),
                      reporter=reporter)
    return ctx, out


def recorder():
    calls = []

    def step(name, state, apply=True, wait=True):
        return Step(name,
                    check=lambda ctx: (calls.append(f"check {name}"), state)[1],
                    apply=(lambda ctx: calls.append(f"apply {name}")) if apply else None,
                    wait=(lambda ctx: calls.append(f"wait {name}")) if wait else None)
    return calls, step


def test_check_then_apply_then_wait_in_order():
    calls, step = recorder()
    ctx, out = make()
    outcomes = run_play("t", [step("a", change("make a")), step("b", change("make b"))], ctx)
    assert calls == ["check a", "apply a", "wait a", "check b", "apply b", "wait b"]
    assert [o.status for o in outcomes] == ["changed", "changed"]


def test_converged_step_is_not_applied_but_still_waited():
    calls, step = recorder()
    ctx, out = make()
    outcomes = run_play("t", [step("a", ok("already there"))], ctx)
    assert calls == ["check a", "wait a"]
    assert outcomes[0].status == "ok"


def test_check_mode_runs_only_checks_and_reports_would_change():
    calls, step = recorder()
    ctx, out = make()
    outcomes = run_play("t", [step("a", change("create x")), step("b", ok())], ctx, check_mode=True)
    assert calls == ["check a", "check b"]
    assert outcomes[0].status == "changed" and "would change: create x" in outcomes[0].detail
    assert outcomes[1].status == "ok"


def test_check_mode_a_check_that_needs_what_is_not_made_yet_is_unknown():
    def needs_cluster(ctx):
        raise CommandError(["kubectl", "get", "nodes"], 1, 'error: context "kind-lab" does not exist')

    def needs_namespace(ctx):
        raise MissingPrerequisite("namespace monitoring")
    ctx, out = make()
    outcomes = run_play("t", [Step("create", lambda c: change("create cluster")),
                              Step("nodes", needs_cluster), Step("secret", needs_namespace),
                              Step("crds", lambda c: unknown("the release's namespace"))], ctx, check_mode=True)
    assert [o.status for o in outcomes] == ["changed", "unknown", "unknown", "unknown"]
    assert [o.detail for o in outcomes[1:]] == ["needs the cluster of context kind-lab", "needs namespace monitoring",
                                                "needs the release's namespace"]
    assert "unknown=3" in out.getvalue()


def test_check_mode_any_other_exception_in_a_check_fails_the_step_whatever_came_before():
    def broken(ctx):
        return {}["state"]  # a bug, not a missing cluster
    for before in (change("create cluster"), ok()):
        ctx, out = make()
        with pytest.raises(PlayFailed) as err:
            run_play("t", [Step("create", lambda c, b=before: b), Step("ray", broken)], ctx, check_mode=True)
        assert [o.status for o in err.value.outcomes] == [before.state, "failed"]
        assert "KeyError" in err.value.outcomes[1].detail


def test_outside_check_mode_an_unknown_check_fails_unless_the_step_only_waits():
    waited = []
    ctx, out = make()
    with pytest.raises(PlayFailed) as err:
        run_play("t", [Step("pods Ready", lambda c: unknown("the pods"), wait=lambda c: waited.append(1)),
                       Step("apply", lambda c: unknown("the cluster"), lambda c: None)], ctx)
    assert waited == [1]
    assert [o.status for o in err.value.outcomes] == ["ok", "failed"]
    assert "cannot be checked: needs the cluster" in err.value.outcomes[1].detail


def test_an_action_runs_every_time_reports_changed_and_would_run_under_check():
    ran = []
    steps = [action("verify", lambda c: ran.append(1) or "200 OK from nginx"),
             action("crawl", lambda c: ran.append(2), check=lambda c: skip("no containers here"))]
    ctx, out = make()
    first = run_play("t", steps, ctx)
    second = run_play("t", steps, ctx)
    assert ran == [1, 1]
    assert "changed=1 (1 action)" in out.getvalue()
    assert [(o.status, o.detail) for o in first] == [("changed", "200 OK from nginx"),
                                                     ("skipped", "no containers here")]
    assert [o.status for o in second] == ["changed", "skipped"]
    ctx, out = make()
    dry = run_play("t", steps, ctx, check_mode=True)
    assert ran == [1, 1] and [(o.status, o.detail) for o in dry] == [("changed", "would run"),
                                                                      ("skipped", "no containers here")]


def test_skip_is_reported_and_dependents_with_explicit_needs_skip_too():
    calls, step = recorder()
    ctx, out = make()
    steps = [step("build", skip("a simulated cluster runs no containers")),
             Step("invoke", lambda c: change("call"), needs=("build",)),
             step("other", change("x"))]
    outcomes = run_play("t", steps, ctx)
    by = {o.step: o for o in outcomes}
    assert by["build"].status == "skipped" and "no containers" in by["build"].detail
    assert by["invoke"].status == "skipped" and "needs build" in by["invoke"].detail
    assert by["other"].status == "changed"  # implicit order only stops on a failure


def test_permanent_failure_is_not_retried_and_later_steps_are_skipped():
    sleeps, attempts = [], []

    def apply(ctx):
        attempts.append(1)
        raise CommandError(["kubectl", "apply", "-f", "-"], 1, "error: error converting YAML to JSON")
    ctx, out = make()
    with pytest.raises(PlayFailed) as err:
        run_play("t", [Step("bad", lambda c: change("x"), apply), Step("next", lambda c: ok())],
                 ctx, sleep=sleeps.append)
    assert len(attempts) == 1 and sleeps == []
    statuses = {o.step: o.status for o in err.value.outcomes}
    assert statuses == {"bad": "failed", "next": "skipped"}
    text = out.getvalue()
    assert "error converting YAML" in text and "kubectl apply" in text
    assert "ok=0  changed=0  unknown=0  failed=1  skipped=1" in text


def test_transient_failure_is_retried_with_exponential_backoff_on_a_fake_clock():
    sleeps, attempts = [], []

    def apply(ctx):
        attempts.append(1)
        if len(attempts) < 3:
            raise CommandError(["kubectl", "apply"], 1,
                               "The connection to the server 127.0.0.1:6443 was refused - "
                               "did you specify the right host or port? connection refused")
        return "applied"
    ctx, out = make()
    outcomes = run_play("t", [Step("flaky", lambda c: change("x"), apply)], ctx, sleep=sleeps.append)
    assert len(attempts) == 3 and outcomes[0].status == "changed"
    assert sleeps == [1.0, 2.0]  # 1 s, then doubled


def test_transient_failure_gives_up_after_the_bounded_attempts():
    sleeps = []

    def apply(ctx):
        raise CommandError(["helm", "upgrade"], 1,
                           "Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress")
    ctx, out = make()
    with pytest.raises(PlayFailed) as err:
        run_play("t", [Step("helm", lambda c: change("x"), apply)], ctx, sleep=sleeps.append)
    assert sleeps == [1.0, 2.0, 4.0]  # 4 attempts, 3 sleeps, capped growth
    assert err.value.outcomes[0].status == "failed"


def test_recap_counts_each_step_once():
    calls, step = recorder()
    ctx, out = make()
    sleeps = []
    flaky = {"n": 0}

    def wait(ctx):
        flaky["n"] += 1
        if flaky["n"] == 1:
            raise ConnectionResetError("connection reset by peer")
    steps = [step("a", ok()), step("b", change("x")), step("c", skip("no")),
             Step("d", lambda c: ok(), wait=wait)]
    outcomes = run_play("t", steps, ctx, sleep=sleeps.append)
    assert len(outcomes) == 4
    assert "ok=2  changed=1  unknown=0  failed=0  skipped=1" in out.getvalue()
    # the recap lists every step with its status
    recap = out.getvalue().split("PLAY RECAP")[1]
    assert [line.split()[:2] for line in recap.splitlines()[1:5]] == [
        ["ok", "a"], ["changed", "b"], ["skipped", "c"], ["ok", "d"]]


def test_independent_steps_run_concurrently_and_dependents_wait():
    import threading
    barrier = threading.Barrier(2, timeout=5)
    order = []

    def both(name):
        def wait(ctx):
            barrier.wait()  # deadlocks (BrokenBarrierError) unless both run at once
            order.append(name)
        return wait
    steps = [Step("cluster", lambda c: ok()),
             Step("monitoring", lambda c: ok(), wait=both("monitoring"), needs=("cluster",)),
             Step("faas", lambda c: ok(), wait=both("faas"), needs=("cluster",)),
             Step("invoke", lambda c: ok(), wait=lambda c: order.append("invoke"),
                  needs=("monitoring", "faas"))]
    ctx, out = make()
    outcomes = run_play("t", steps, ctx)
    assert all(o.status == "ok" for o in outcomes)
    assert order[-1] == "invoke" and set(order[:2]) == {"monitoring", "faas"}


def test_step_failed_message_reaches_the_output():
    def wait(ctx):
        raise StepFailed("nginx: 2/3 pods Ready; nginx-abc: ImagePullBackOff (not found); check the image")
    ctx, out = make()
    with pytest.raises(PlayFailed):
        run_play("t", [Step("nginx", lambda c: ok(), wait=wait)], ctx)
    assert "nginx-abc: ImagePullBackOff" in out.getvalue()


def test_unknown_need_and_cycles_are_rejected():
    ctx, out = make()
    with pytest.raises(ValueError, match="unknown"):
        run_play("t", [Step("a", lambda c: ok(), needs=("zzz",))], ctx)
    with pytest.raises(ValueError, match="cycle"):
        run_play("t", [Step("a", lambda c: ok(), needs=("b",)), Step("b", lambda c: ok(), needs=("a",))], ctx)


@pytest.mark.skipif(sys.platform == "win32", reason="reads the process list with ps")
def test_ctrl_c_ends_children_prints_the_recap_and_returns_promptly():
    """Ctrl-C while a step runs a tool: the child is ended, the recap still prints."""
    import _thread
    import os
    import subprocess
    import sys

    from playbooks.core.commands import LocalShell

    out = io.StringIO()
    reporter = Reporter(Console(file=out, width=200, highlight=False), live=False)
    ctx = StepContext(Lab(), LocalShell(), reporter=reporter)
    started = {}

    marker = f"kindlab-ctrl-c-{os.getpid()}"

    def long_tool(ctx):
        threading.Timer(0.5, _thread.interrupt_main).start()  # the user presses Ctrl-C
        ctx.sh.run([sys.executable, "-c", "import time, sys; time.sleep(60)", marker])

    import signal
    import threading

    # Ctrl-C reaches Python's own handler, as in a terminal. interrupt_main does nothing where SIGINT's
    # disposition is SIG_DFL or SIG_IGN: in one whole-suite run (not reproduced alone) this play ran its
    # child's full 60 s, so the handler is set here and the one found is named if it was another.
    found = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_play("t", [Step("ok first", lambda c: ok(), wait=lambda c: time.sleep(1.0)),
                           Step("long", lambda c: change("x"), long_tool),
                           Step("never", lambda c: change("y"))], ctx)
    finally:
        signal.signal(signal.SIGINT, found)
    if found is not signal.default_int_handler:
        print(f"SIGINT's handler was {found!r} when this test began")
    # the child was ended, not left to sleep out its 60 s
    alive = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert marker not in alive
    text = out.getvalue()
    assert "interrupted (Ctrl-C)" in text and "PLAY RECAP" in text
    assert "ok=1" in text and "failed=1" in text
    assert "rerun the same command to continue" in text
    recap = text.split("PLAY RECAP")[1].splitlines()
    seconds = {line.split()[1]: float(line.split()[-1].rstrip("s")) for line in recap[1:4]}
    assert seconds["long"] < seconds["ok"]  # its own time, not the play's (which includes the first step's 1 s)
    assert [line.split()[:2] for line in recap[1:4]] == [["ok", "ok"], ["failed", "long"], ["skipped", "never"]]
    assert "skipped=1" in text  # never reached, still counted

"""The fault suite: a stalled or dead API server, dead controllers, pods that are never created.

The control-plane faults are made on a kwok cluster of this module's own (the
session's testbed stays healthy): its processes are paused with SIGSTOP
(always resumed in a finally) or killed, and after each test `cluster.create`
must bring the cluster back, which is itself under test.
"""
import contextlib
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from kubernetes import client

from playbooks import cluster, nginx
from playbooks.core.cli import make_context
from playbooks.core.daemons import alive
from playbooks.core.resources import applied
from playbooks.core.runner import PlayFailed
from playbooks.core.steps import Step, ok
from playbooks.providers.kwok import kwok_dir

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pauses and kills processes with POSIX signals")
STALL_S = 40  # how long a pause would last if nothing ended it sooner; the waits under test end long before


@pytest.fixture(scope="module")
def faulty(testbed):
    from tests.conftest import kwok_cluster
    lab = replace(testbed, cluster=f"{testbed.cluster}-faults", kwok=replace(testbed.kwok, nodes=1), timeout=90)
    with kwok_cluster(lab, "the fault suite's kwok cluster"):
        yield lab


@pytest.fixture
def lab(faulty):
    """The fault cluster, brought back by `cluster.create` after the test broke it."""
    yield faulty
    from tests.conftest import PlayRun
    run = PlayRun(faulty)
    try:
        run(cluster.create_steps(faulty))
    except PlayFailed:
        repair = run.output
        run(cluster.delete_steps(faulty))  # a fresh cluster (new ports) for the tests that follow
        run(cluster.create_steps(faulty))
        pytest.fail(f"cluster.create did not repair the fault cluster:\n{repair}")


def component_pid(lab, name: str) -> int:
    return int((kwok_dir(lab) / "pids" / f"{name}.pid").read_text().strip())


@contextlib.contextmanager
def killed(lab, name: str):
    """SIGKILL a control-plane process; its port stays out of other hands while the block runs.

    kwokctl gives a new cluster the highest free ports below 32768, and other test runs on a
    shared machine create clusters all the time: a dead component's port is often taken within
    seconds, and then `cluster.create` cannot restart it. So the port is held by a socket that
    answers every connection with a reset, as a server going down does. (A bound socket that does
    not listen would refuse instead, but after a busy server its closed connections linger in
    TIME_WAIT and only a listening socket keeps the port.)
    """
    pid = component_pid(lab, name)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    port = int(next(a for a in argv if a.startswith("--secure-port=")).split("=", 1)[1])
    os.kill(pid, signal.SIGKILL)
    while alive(pid):  # until every thread is gone and the port is free
        time.sleep(0.01)
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen()
    holder.settimeout(0.1)
    done = threading.Event()

    def reset_each():
        while not done.is_set():
            try:
                conn, _ = holder.accept()
                with conn:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:  # a timeout, or a client already gone
                continue

    answering = threading.Thread(target=reset_each, daemon=True)
    answering.start()
    try:
        yield
    finally:
        done.set()
        answering.join()
        holder.close()


@contextlib.contextmanager
def paused(lab, name: str, most_s: float = STALL_S):
    """SIGSTOP a control-plane process; SIGCONT after `most_s` or when the block ends, whichever is first.
    Yields an Event set the moment it is resumed."""
    pid = component_pid(lab, name)
    resumed = threading.Event()

    def resume():
        resumed.set()  # before the signal: whatever the process answers next comes after this
        os.kill(pid, signal.SIGCONT)

    timer = threading.Timer(most_s, resume)
    os.kill(pid, signal.SIGSTOP)
    timer.start()
    try:
        yield resumed
    finally:
        timer.cancel()
        resume()


def wait_until_lease_expired(kube, lease: str, limit_s: float = 120) -> None:
    """Until nobody has renewed the leader lease for longer than its duration (plus the slack kindlab allows)."""
    api = client.CoordinationV1Api(kube.api)
    deadline = time.monotonic() + limit_s
    while True:
        spec = api.read_namespaced_lease(lease, "kube-system").spec
        if time.time() - spec.renew_time.timestamp() > spec.lease_duration_seconds + 6:
            return
        assert time.monotonic() < deadline, f"lease {lease} still renewed {limit_s:.0f}s after its holder was killed"
        time.sleep(1)


def wait_step(name: str, timeout: float) -> Step:
    return Step(f"wait {timeout:.0f}s for {name}", lambda ctx: ok(),
                wait=lambda ctx: ctx.kube.wait_deployment("default", name, timeout=timeout, say=ctx.say))


def failure_of(failed) -> str:
    """The message of the step that failed, from pytest.raises(PlayFailed)."""
    return next(o.detail for o in failed.value.outcomes if o.status == "failed")


def test_a_wait_keeps_its_deadline_and_names_the_stalled_api_server(play, lab):
    play(nginx.deploy_steps(lab), lab=lab)
    with paused(lab, "kube-apiserver") as resumed:
        with pytest.raises(PlayFailed) as failed:
            play([wait_step("nginx", 3)], lab=lab)
        short = failure_of(failed)
        with pytest.raises(PlayFailed) as failed:
            play([wait_step("nginx", 8)], lab=lab)
        longer, printed = failure_of(failed), play.output
        ended_during_the_stall = not resumed.is_set()
    assert ended_during_the_stall, "the waits ended only once the API server answered again"
    assert "gave up after 3s: the API server did not answer for" in short, short
    assert "`invoke cluster.create` restarts it" in short
    assert "pods Ready" not in short and "pods Ready" not in longer  # a stale count is no reason
    assert "gave up after 8s: the API server did not answer for" in longer, longer
    # and while it waited, it said so
    assert "the API server does not answer (no answer within" in printed, printed


def test_a_dead_api_server_is_named_with_the_next_step_then_restarted(play, lab):
    play(nginx.deploy_steps(lab), lab=lab)
    once = replace(lab, retry_attempts=1)  # the same message after retries; a short outage keeps its port
    with killed(lab, "kube-apiserver"):
        with pytest.raises(PlayFailed) as failed:
            play(nginx.scale_steps(once, 2), lab=once)
    message = failure_of(failed)
    assert f"the API server of {lab.context}" in message and "is down or stalled: connection" in message, message
    assert "`invoke cluster.create` restarts it" in message and "MaxRetryError" not in play.output

    outcomes = {o.step: o for o in play(cluster.create_steps(lab), lab=lab)}
    control = outcomes[f"kwok control plane of {lab.cluster} running"]
    assert control.status == "changed" and "kube-apiserver" in control.detail, play.output
    assert [o.status for o in play(nginx.scale_steps(lab, 2), lab=lab)] == ["changed"], play.output


def test_dead_controllers_are_named_by_the_wait_and_restarted_by_cluster_create(play, lab):
    short = replace(lab, timeout=10)
    play(nginx.deploy_steps(lab) + nginx.scale_steps(lab, 1), lab=lab)
    faults_kube = make_context(lab).kube

    with killed(lab, "kube-scheduler"):
        wait_until_lease_expired(faults_kube, "kube-scheduler")
        with pytest.raises(PlayFailed) as failed:
            play(nginx.scale_steps(short, 2), lab=short)
        message = failure_of(failed)
        assert "1/2 pods Ready" in message and "the scheduler is not running" in message, message

        with killed(lab, "kube-controller-manager"):
            wait_until_lease_expired(faults_kube, "kube-controller-manager")
            with pytest.raises(PlayFailed) as failed:
                play(nginx.scale_steps(short, 3), lab=short)
            message = failure_of(failed)
    assert "the controller-manager is not running" in message and "no pod is being created" in message, message
    assert "`invoke cluster.create` restarts it" in message

    outcomes = {o.step: o for o in play(cluster.create_steps(lab), lab=lab)}
    control = outcomes[f"kwok control plane of {lab.cluster} running"]
    assert control.status == "changed", play.output
    assert "kube-controller-manager" in control.detail and "kube-scheduler" in control.detail
    # repaired for real: the pods the scale asked for are made, placed and Ready
    assert [o.status for o in play(nginx.scale_steps(lab, 3), lab=lab)] == ["ok"], play.output
    assert faults_kube.apps.read_namespaced_deployment("nginx", "default").status.ready_replicas == 3


def test_pods_a_quota_forbids_are_explained_by_their_replicaset(play, testbed, kube):
    namespace = f"quota-{os.getpid() % 10000}"
    kube.core.create_namespace({"metadata": {"name": namespace}})
    docs = [{"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "two-pods", "namespace": namespace},
             "spec": {"hard": {"pods": "2"}}},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "capped", "namespace": namespace},
             "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "capped"}},
                      "template": {"metadata": {"labels": {"app": "capped"}},
                                   "spec": {"containers": [{"name": "main", "image": "registry.example/app:1.0"}]}}}}]
    step = applied("capped deployment", testbed, lambda: docs,
                   wait=lambda ctx: ctx.kube.wait_deployment(namespace, "capped", timeout=15, say=ctx.say))
    try:
        with pytest.raises(PlayFailed) as failed:
            play([step])
        message = failure_of(failed)
        assert "2/4 pods Ready" in message and "2 pod(s) not created" in message, message
        assert "FailedCreate" in message and "exceeded quota" in message, message
    finally:
        kube.core.delete_namespace(namespace)


# --- one deadline: an API server that stalls at any moment of a step fails it on time, naming the stall ---
STEP_STALL_S = 20  # the stall the issue measured: nginx.scale --timeout 3 then took 22.8 s


def paused_from(lab, when: str, scale, seconds: float = STEP_STALL_S):
    """nginx.scale's step, the API server paused for `seconds` just before its check, apply or wait."""
    pause = {}

    def stall():
        pause["cm"] = paused(lab, "kube-apiserver", most_s=seconds)
        pause["resumed"] = pause["cm"].__enter__()

    def before(fn):
        def run(ctx):
            stall()
            return fn(ctx)
        return run

    step = replace(scale, **{when: before(getattr(scale, when))})
    return step, pause


@pytest.mark.parametrize("when", ["check", "apply", "wait"])
def test_a_stall_at_any_point_of_a_step_fails_it_within_its_timeout_naming_the_stall(play, lab, when):
    play(nginx.deploy_steps(lab) + nginx.scale_steps(lab, 1), lab=lab)
    short = replace(lab, timeout=3)
    step, pause = paused_from(lab, when, nginx.scale_steps(short, 2)[0])
    try:
        start = time.monotonic()
        with pytest.raises(PlayFailed) as failed:
            play([step], lab=short)
        took = time.monotonic() - start
        ended_during_the_stall = not pause["resumed"].is_set()
    finally:
        if "cm" in pause:
            pause["cm"].__exit__(None, None, None)
    message = failure_of(failed)
    print(f"\nFIGURE stall before the {when}: the step failed after {took:.1f} s (--timeout 3, stall {STEP_STALL_S} s)")
    assert ended_during_the_stall, f"the step ended only once the API server answered again: {message}"
    # the stall, named: "the API server of X is down or stalled", or the wait's "the API server did not answer"
    assert re.search(r"the API server (of \S+ (\(\S+\) )?(is down or stalled|does not answer)|did not answer)",
                     message), message
    assert "not running" not in message  # no controller blamed for what the API server did


def test_a_controller_the_stall_stopped_is_named_with_the_stall_as_its_cause_after_a_leases_grace(play, lab):
    """The stall ends while the wait goes on. Measured here: the controller-manager cannot renew its lease
    through the paused API server and exits ("leaderelection lost"). Its lease is not judged until a lease's
    length after the API server answered again (where a kubelet restarts controllers, as on kind, they
    lead again by then); then it is named, with the stall as the cause, and `cluster.create` restarts it."""
    play(nginx.deploy_steps(lab) + nginx.scale_steps(lab, 1), lab=lab)
    # the stall (30 s), then a lease's grace (21 s) before judging it; slack for a loaded machine (the kind lane beside)
    roomy = replace(lab, timeout=75)
    # longer than the controller-manager's renew deadline (10 s): it loses its lease and exits
    step, pause = paused_from(lab, "wait", nginx.scale_steps(roomy, 2)[0], seconds=30)
    try:
        with pytest.raises(PlayFailed) as failed:
            play([step], lab=roomy)
    finally:
        if "cm" in pause:
            pause["cm"].__exit__(None, None, None)
    message = failure_of(failed)
    assert "the controller-manager is not running" in message, message
    assert "it lost its lease while the API server did not answer" in message, message
    assert "`invoke cluster.create` restarts it" in message

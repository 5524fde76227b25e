"""Reading cluster state and waiting for it, with the official Kubernetes client.

Waits are driven by watches: each event wakes the wait, which then reads the
current state and decides. While it waits it says which pods are not Ready and
why; it fails at once on a reason that time will not cure (a missing image, a
crash loop) and names the pod, the reason and what to do next. Pods that do
not exist cannot say why: for those the wait looks one level up, at the
ReplicaSet and Deployment and at the controller-manager that makes pods.

Every API call has a request timeout, and inside a wait one bounded by the
wait's deadline, so an API server that stops answering is reported while the
wait goes on and named as the reason when it ends, on time.
"""
from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import urllib3
from kubernetes import client, config, watch
from kubernetes.client import rest
from kubernetes.client.exceptions import ApiException

from . import deadline as deadlines
from .steps import MissingPrerequisite, StepFailed, Unreachable, WaitTimeout, is_transient

# Waiting reasons that time will not cure (kubelet's own words).
TERMINAL_WAITING = {"InvalidImageName", "CreateContainerConfigError", "CreateContainerError",
                    "ErrImageNeverPull"}
PULL_ERRORS = {"ImagePullBackOff", "ErrImagePull"}
# Registry answers that mean the image will never come, however long we wait.
PULL_FATAL = ("not found", "manifest unknown", "repository does not exist", "unauthorized",
              "denied", "invalid reference")
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
CRASH_LOOP_LIMIT = 3
OPERATOR_GRACE_S = 30.0  # an operator writes a resource's status within seconds
PULL_GRACE_S = 90.0           # a pull error that lasts this long (a progressing pull does not count)
UNSCHEDULABLE_GRACE_S = 30.0  # Insufficient cpu/memory this long, on nodes that do not grow: it will not fit
REQUEST_TIMEOUT_S = 30.0      # any API call
WAIT_REQUEST_TIMEOUT_S = 5.0  # an API call inside a wait: it comes back to report a stall and keep its deadline
MIN_REQUEST_TIMEOUT_S = 1.0   # even the last look before a deadline gets this long
EVENTS_GRACE_S = 2.0          # reading recent warnings for a timeout message, after the deadline
# The leader leases of the components that turn objects into pods: lease -> (who, what stops without it).
LEADERS = {"kube-controller-manager": ("controller-manager", "no pod is being created"),
           "kube-scheduler": ("scheduler", "no pod is being placed on a node")}
LEASE_SLACK_S = 5.0  # beyond its duration, before an unrenewed lease means its holder is gone

NEXT_STEP = {
    "ImagePullBackOff": "check the image name and tag, or your network",
    "ErrImagePull": "check the image name and tag, or your network",
    "InvalidImageName": "fix the image name",
    "CrashLoopBackOff": "read its logs: kubectl --context {context} -n {namespace} logs {pod} --previous",
    "CreateContainerConfigError": "a Secret or ConfigMap it uses is probably missing: "
                                  "kubectl --context {context} -n {namespace} describe pod {pod}",
    "Unschedulable": "no node has room for it: lower its requests, free resources or add nodes",
}


@dataclass(frozen=True)
class PodState:
    name: str
    ready: bool
    reason: str
    message: str = ""
    terminal: bool = False
    init_container: str = ""  # the init container a PodInitializing pod is running

    def describe(self) -> str:
        return f"{self.name}: {self.reason}" + (f" ({self.message})" if self.message else "")


@dataclass(frozen=True)
class Verdict:
    done: bool
    progress: str
    failure: str | None = None  # set when waiting longer cannot help


def pod_state(pod, now: float | None = None, pull_error_since: float | None = None,
              fixed_nodes: bool = False) -> PodState:
    """Why a pod is (not) Ready, in kubelet's words, and whether waiting can help.

    A pull error is final after PULL_GRACE_S from `pull_error_since` (when it was
    first seen; else the pod's age). With `fixed_nodes` (a cluster without an
    autoscaler) a pod Unschedulable for want of CPU or memory is final after
    UNSCHEDULABLE_GRACE_S: no node will come.
    """
    name = pod.metadata.name
    status = pod.status
    conditions = {c.type: c for c in (status.conditions or [])}
    if pod.metadata.deletion_timestamp:
        return PodState(name, False, "Terminating")
    if status.phase == "Succeeded":
        return PodState(name, True, "Completed")
    ready = conditions.get("Ready")
    if ready is not None and ready.status == "True":
        return PodState(name, True, "Ready")
    scheduled = conditions.get("PodScheduled")
    if scheduled is not None and scheduled.status == "False":
        message = (scheduled.message or "").strip()
        since = scheduled.last_transition_time.timestamp() if scheduled.last_transition_time else None
        stuck = (since is not None and (now or time.time()) - since > UNSCHEDULABLE_GRACE_S) or \
            _age(pod, now) > UNSCHEDULABLE_GRACE_S
        terminal = fixed_nodes and scheduled.reason == "Unschedulable" and "Insufficient" in message and stuck
        return PodState(name, False, scheduled.reason or "Pending", message, terminal)
    running_init = next((cs.name for cs in status.init_container_statuses or []
                         if cs.state and cs.state.running and not cs.ready), "")
    if running_init:
        return PodState(name, False, "PodInitializing", f"init container {running_init} running",
                        init_container=running_init)
    statuses = list(status.init_container_statuses or []) + list(status.container_statuses or [])
    for cs in statuses:
        state = cs.state
        if state and state.waiting and state.waiting.reason:
            reason, message = state.waiting.reason, (state.waiting.message or "").strip()
            terminal = reason in TERMINAL_WAITING
            if reason in PULL_ERRORS:
                erring = (now or time.time()) - pull_error_since if pull_error_since else _age(pod, now)
                terminal = any(m in message.lower() for m in PULL_FATAL) or erring > PULL_GRACE_S
            if reason == "CrashLoopBackOff":
                terminal = (cs.restart_count or 0) >= CRASH_LOOP_LIMIT
                message = message or f"restarted {cs.restart_count} times"
            return PodState(name, False, reason, message, terminal)
        if state and state.terminated and state.terminated.exit_code:
            return PodState(name, False, state.terminated.reason or "Error",
                            f"exit code {state.terminated.exit_code}",
                            terminal=pod.spec.restart_policy == "Never")
    if status.phase == "Failed":
        return PodState(name, False, status.reason or "Failed", status.message or "", True)
    if status.phase == "Running":
        return PodState(name, False, "NotReady", "running, readiness probe not yet passing")
    return PodState(name, False, status.reason or status.phase or "Pending", status.message or "")


def _age(pod, now: float | None) -> float:
    created = pod.metadata.creation_timestamp
    if created is None:
        return 0.0
    return (now or time.time()) - created.timestamp()


def in_pull_error(pod) -> bool:
    return any(cs.state and cs.state.waiting and cs.state.waiting.reason in PULL_ERRORS
               for cs in list(pod.status.init_container_statuses or []) + list(pod.status.container_statuses or []))


def explain(pods: Iterable, want: int, what: str, context: str, namespace: str,
            now: float | None = None) -> tuple[int, str, str | None]:
    """(ready count, progress sentence, failure sentence or None) for a set of pods."""
    return summarize([pod_state(p, now) for p in pods], want, what, context, namespace)


def summarize(states: list[PodState], want: int, what: str, context: str,
              namespace: str) -> tuple[int, str, str | None]:
    """(ready count, progress sentence, failure sentence or None) from the pods' states."""
    live = [s for s in states if s.reason != "Terminating"]
    ready = sum(1 for s in live if s.ready)
    waiting = [s for s in live if not s.ready]
    progress = f"{ready}/{want} pods Ready"
    if waiting:
        progress += "; " + "; ".join(s.describe() for s in waiting[:3])
        if len(waiting) > 3:
            progress += f"; and {len(waiting) - 3} more"
    terminal = next((s for s in waiting if s.terminal), None)
    failure = None
    if terminal:
        failure = f"{what}: {ready}/{want} pods Ready; {terminal.describe()}; {next_step(terminal, context, namespace)}"
    return ready, progress, failure


def next_step(state: PodState, context: str, namespace: str) -> str:
    """What a user can do about a pod in this state."""
    hint = NEXT_STEP.get(state.reason, "kubectl --context {context} -n {namespace} describe pod {pod}")
    return hint.format(context=context, namespace=namespace, pod=state.name)


class ApiServerUnreachable(Unreachable):
    """The API server did not answer. A ConnectionError, so the runner retries it; `why` is short."""

    def __init__(self, why: str, message: str):
        self.why = why
        super().__init__(message)


class _BoundedRest(rest.RESTClientObject):
    """Requests with a timeout (bounded by the deadline of the wait they serve), and a dead or
    stalled API server as one sentence with a next step instead of urllib3's MaxRetryError."""

    def __init__(self, configuration, kube: "Kube"):
        super().__init__(configuration)
        self.kube = kube

    def request(self, method, url, *args, _request_timeout=None, **kwargs):
        seconds = self.kube.request_timeout(_request_timeout)
        try:
            # a pair: the client drops a plain float timeout without a word
            answer = super().request(method, url, *args, _request_timeout=(seconds, seconds), **kwargs)
        except urllib3.exceptions.HTTPError as exc:
            self.kube.silent_since = self.kube.silent_since or time.time()
            raise self.kube.unreachable(exc, seconds) from exc
        if self.kube.silent_since:  # it answers again: the leases it could not renew meanwhile are no one's fault
            self.kube.back_at, self.kube.silent_since = time.time(), None
        return answer


def _stall_reason(exc: Exception) -> str:
    """A few words on why an API call failed for now: a timeout, a refused connection, a 503."""
    if isinstance(exc, ApiServerUnreachable):
        return exc.why
    if isinstance(exc, ApiException):
        return f"only HTTP {exc.status} {exc.reason}"
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


def _unreachable_why(exc: Exception, seconds: float) -> str:
    cause = getattr(exc, "reason", None) or exc
    text = str(cause).lower()
    for known in ("connection refused", "connection reset", "remote end closed connection"):
        if known in text:
            return known
    if isinstance(cause, urllib3.exceptions.TimeoutError):  # after the texts: a refusal is a NewConnectionError,
        return f"no answer within {seconds:.0f}s"            # which urllib3 derives from its timeout errors
    return str(cause).splitlines()[0][:120]


DEFAULT_WAIT_S = 300.0  # a wait outside any step (a test, a tool): the settings' default timeout


def wait_seconds(timeout: float | None) -> float:
    """A wait's length: as asked, else what is left of the step's deadline."""
    if timeout is not None:
        return timeout
    step = deadlines.current()
    return step.left() if step is not None else DEFAULT_WAIT_S


class Kube:
    """A client bound to one kubeconfig file and one context: never the current one.

    `fix` is the next step when the cluster's API server does not answer.
    """

    def __init__(self, kubeconfig: Path, context: str, fix: str = "", fixed_nodes: bool = False):
        self.kubeconfig = Path(kubeconfig)
        self.context = context
        self.fixed_nodes = fixed_nodes  # no autoscaler: a pod that does not fit now never will
        self._pull_errors: dict[str, float] = {}  # pod uid -> when its pull error was first seen
        self._exit_logs: dict[tuple, str] = {}  # (pod uid, container, restarts, ended now) -> its log's tail
        # When the API server stopped answering this client (None: it answers), and when it answered again
        # (time.time()): a leader cannot renew its lease through a stalled API server either.
        self.silent_since: float | None = None
        self.back_at = 0.0
        self.fix = fix or f"check the cluster: `kubectl --context {context} get --raw /readyz`"
        configuration = client.Configuration()
        try:
            # persist_config=False: the client never writes the user's kubeconfig (refreshed tokens stay in memory)
            config.load_kube_config(config_file=str(kubeconfig), context=context,
                                    client_configuration=configuration, persist_config=False)
        except config.ConfigException as exc:
            raise MissingPrerequisite(f"the cluster of context {context}",
                                      f"context {context!r} not found in {kubeconfig}: {exc}; "
                                      "create the cluster first (invoke cluster.create)") from None
        # One quick retry of a refused connection; a timed-out read is not repeated behind the deadline's back.
        configuration.retries = urllib3.Retry(total=1, read=0)
        self.host = configuration.host
        self.api = client.ApiClient(configuration)
        self.api.rest_client = _BoundedRest(configuration, self)
        self._local = threading.local()  # the deadline of the wait this thread is in
        self.cancel = threading.Event()  # set by interrupt(): Ctrl-C ends every wait at once
        self._waiting: set[queue.Queue] = set()
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.apiext = client.ApiextensionsV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.coordination = client.CoordinationV1Api(self.api)

    # --- request timeouts ---------------------------------------------------
    def request_timeout(self, asked=None) -> float:
        """Seconds for one request: what the caller asked, or the default; inside a wait, no later than its
        deadline, and inside a step no later than the step's."""
        deadline = getattr(self._local, "deadline", None)
        if isinstance(asked, tuple):
            asked = max(asked)
        seconds = float(asked or (WAIT_REQUEST_TIMEOUT_S if deadline else REQUEST_TIMEOUT_S))
        step = deadlines.current()
        if step is not None:
            deadline = step.at if deadline is None else min(deadline, step.at)
        if deadline is not None:
            seconds = min(seconds, max(MIN_REQUEST_TIMEOUT_S, deadline - time.monotonic()))
        return seconds

    @contextlib.contextmanager
    def deadline(self, at: float):
        """API calls made by this thread inside the block end by `at` (time.monotonic())."""
        outer = getattr(self._local, "deadline", None)
        self._local.deadline = at if outer is None else min(at, outer)
        try:
            yield
        finally:
            self._local.deadline = outer

    def unreachable(self, exc: Exception, seconds: float) -> ApiServerUnreachable:
        why = _unreachable_why(exc, seconds)
        return ApiServerUnreachable(why, f"the API server of {self.context} ({self.host}) is down or stalled: "
                                         f"{why}; {self.fix}")

    # --- generic wait -----------------------------------------------------
    def wait_for(self, what: str, evaluate: Callable[[], Verdict], watches: list[tuple[Callable, dict]],
                 *, timeout: float | None = None, say: Callable[[str], None] = lambda m: None,
                 recheck: float = 2.0, events_of: Callable[[], list[str]] | None = None) -> str:
        """Wake on any watch event (or every `recheck` s as a backstop), then ask `evaluate`.

        Ends by its deadline whatever the API server does: each call is bounded by it, and an
        API server that does not answer is waited for, reported, and named at the deadline.
        """
        timeout = wait_seconds(timeout)
        events: queue.Queue = queue.Queue()
        self._waiting.add(events)
        stop = threading.Event()
        threads = [threading.Thread(target=self._pump, args=(fn, kw, events, stop), daemon=True)
                   for fn, kw in watches]
        watching = False  # the watches start after a first look that is not done: on a converged lab most
        # waits are over at once, and each watch would first list (and model) every object it covers
        start = time.monotonic()
        deadline = start + timeout
        answered = start  # when the API server last answered
        verdict = Verdict(False, "starting")
        try:
            while True:
                if self.cancel.is_set():
                    raise StepFailed(f"{what}: interrupted (Ctrl-C) while waiting")
                try:
                    with self.deadline(deadline):
                        verdict = evaluate()
                    answered, stalled = time.monotonic(), ""
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    stalled = _stall_reason(exc)
                now = time.monotonic()
                if not stalled and verdict.done:
                    return verdict.progress
                if not stalled and verdict.failure:
                    raise StepFailed(f"{verdict.failure} (after {now - start:.0f}s)")
                if now >= deadline:
                    raise WaitTimeout(self._timeout_message(what, timeout, verdict, stalled, now - answered,
                                                            events_of))
                if not watching:
                    for t in threads:
                        t.start()
                    watching = True
                say(f"the API server does not answer ({stalled}); waiting ({now - answered:.0f}s)" if stalled
                    else f"{verdict.progress} ({now - start:.0f}s)")
                try:
                    events.get(timeout=min(recheck, max(0.05, deadline - now)))
                    while True:  # a burst of events needs one look, not one each
                        events.get_nowait()
                except queue.Empty:
                    pass
        finally:
            stop.set()
            self._waiting.discard(events)

    def _timeout_message(self, what: str, timeout: float, verdict: Verdict, stalled: str, silent: float,
                         events_of: Callable[[], list[str]] | None) -> str:
        if stalled:  # the last count is old news: the reason is the API server
            return (f"{what}: gave up after {timeout:.0f}s: the API server did not answer for {silent:.0f}s "
                    f"({stalled}); {self.fix}")
        recent: list[str] = []
        if events_of:
            try:
                with self.deadline(time.monotonic() + EVENTS_GRACE_S):
                    recent = events_of()
            except Exception as exc:  # the warnings only add to the message
                if not is_transient(exc):
                    raise
        return (f"{what}: not ready after {timeout:.0f}s: {verdict.progress}"
                + (f"; recent warnings: {'; '.join(recent)}" if recent else ""))

    def interrupt(self) -> None:
        """Wake every wait now and make it fail as interrupted."""
        self.cancel.set()
        for events in list(self._waiting):
            events.put(1)

    def _pump(self, list_fn, kwargs, events: queue.Queue, stop: threading.Event) -> None:
        while not stop.is_set():
            w = watch.Watch()
            try:
                for _ in w.stream(list_fn, timeout_seconds=5, _request_timeout=10, **kwargs):
                    events.put(1)
                    if stop.is_set():
                        w.stop()
                        return
            except Exception:  # the evaluate() call reports real API problems
                stop.wait(0.5)

    # --- explaining pods -----------------------------------------------------
    def explain(self, pods: list, want: int, what: str, namespace: str) -> tuple[int, str, str | None]:
        """`explain`, with what only the cluster can add: how long an image pull has run (and a
        pull error's grace counted from when it was first seen), the running init container's
        last log line, and for a pod that cannot fit, what it asks beside what the nodes have free."""
        now = time.time()
        states = []
        for pod in pods:
            since = None
            if in_pull_error(pod):
                since = self._pull_errors.setdefault(pod.metadata.uid, now)
            else:
                self._pull_errors.pop(pod.metadata.uid, None)
            states.append(pod_state(pod, now, pull_error_since=since, fixed_nodes=self.fixed_nodes))
        by_name = {p.metadata.name: p for p in pods}
        pulls = self._pulls(namespace, now) if any(s.reason == "ContainerCreating" for s in states) else {}
        detailed = []
        for state in states:
            extra = ""
            if state.reason == "ContainerCreating" and state.name in pulls:
                extra = pulls[state.name]
            elif state.init_container and len(detailed) < 3:
                extra = f"its last log line: {self._last_log_line(namespace, state.name, state.init_container)}"
            elif state.terminal and state.reason == "Unschedulable":
                extra = self._room_for(by_name[state.name])
            detailed.append(replace(state, message="; ".join(filter(None, [state.message, extra]))))
        return summarize(detailed, want, what, self.context, namespace)

    def _pulls(self, namespace: str, now: float) -> dict[str, str]:
        """Pod -> "pulling IMAGE for N s", for pods whose latest pull event is a start, not an end."""
        latest: dict[str, tuple[float, str, str]] = {}
        for reason in ("Pulling", "Pulled"):
            for event in self.core.list_namespaced_event(
                    namespace, field_selector=f"involvedObject.kind=Pod,reason={reason}").items:
                when = event.last_timestamp or event.event_time or event.metadata.creation_timestamp
                at = when.timestamp() if when else 0.0
                pod = event.involved_object.name
                if pod not in latest or at >= latest[pod][0]:
                    latest[pod] = (at, reason, event.message or "")
        return {pod: f"pulling {message.split('image', 1)[-1].strip()} for {now - at:.0f}s"
                for pod, (at, reason, message) in latest.items() if reason == "Pulling"}

    def _last_log_line(self, namespace: str, pod: str, container: str) -> str:
        try:
            text = self.core.read_namespaced_pod_log(pod, namespace, container=container, tail_lines=1)
        except ApiException:
            return "none yet"
        return (text or "").strip().splitlines()[-1][:200] if (text or "").strip() else "none yet"

    def refused(self, pods: list, refusals: Sequence) -> str | None:
        """The reason of the first refusal a container said in its log as it exited, else None.

        A log is read once per container run (the kubelet keeps the last one as `previous`).
        """
        for pod in pods:
            for cs in pod.status.container_statuses or []:
                for refusal in refusals:
                    if cs.name != refusal.container:
                        continue
                    ended_now = bool(cs.state and cs.state.terminated)
                    if not ended_now and not (cs.last_state and cs.last_state.terminated):
                        continue
                    key = (pod.metadata.uid, cs.name, cs.restart_count or 0, ended_now)
                    if key not in self._exit_logs:
                        try:
                            self._exit_logs[key] = self.core.read_namespaced_pod_log(
                                pod.metadata.name, pod.metadata.namespace, container=cs.name,
                                previous=not ended_now, tail_lines=20) or ""
                        except ApiException:
                            self._exit_logs[key] = ""
                    line = next((l for l in self._exit_logs[key].splitlines() if refusal.marker in l), None)
                    if line is not None:
                        return (f"{refusal.reason} (pod {pod.metadata.name}, container {cs.name} exited: "
                                f"{line.strip()[:200]})")
        return None

    def _room_for(self, pod) -> str:
        """What an Unschedulable pod asks, beside what the roomiest node has free."""
        from .quantities import node_free, requests

        cpu, mem = requests(pod)
        free = node_free(self)
        best = max(((c, m) for _, c, m, _ in free), default=(0, 0))
        return (f"it requests {cpu}m CPU / {mem}Mi; the roomiest of {len(free)} node(s) has {best[0]}m CPU / "
                f"{best[1]}Mi free, and no node is added on demand here")

    # --- workloads --------------------------------------------------------
    def wait_deployment(self, namespace: str, name: str, *, timeout: float | None = None,
                        say: Callable[[str], None] = lambda m: None, drained: bool = False) -> str:
        """Until the rollout is complete and every wanted replica is Ready; `drained`: and the old pods
        are gone, not only stopping (a stopping pod can still answer: of-watchdog serves 10 s after
        SIGTERM while kube-proxy catches up), so whatever is called next reaches the new ones."""
        what = f"deployment {namespace}/{name}"

        def evaluate() -> Verdict:
            try:
                dep = self.apps.read_namespaced_deployment(name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return Verdict(False, f"{what} does not exist yet")
                raise
            want = dep.spec.replicas if dep.spec.replicas is not None else 1
            st = dep.status
            pods = self.core.list_namespaced_pod(namespace, label_selector=_selector(dep)).items
            ready, progress, failure = self.explain(pods, want, name, namespace)
            rolled = ((st.observed_generation or 0) >= (dep.metadata.generation or 0)
                      and (st.updated_replicas or 0) == want and (st.ready_replicas or 0) == want
                      and (st.available_replicas or 0) == want and (st.replicas or 0) == want)
            stopping = [p.metadata.name for p in pods if p.metadata.deletion_timestamp]
            if rolled and drained and stopping:
                return Verdict(False, f"{name}: {want}/{want} pods Ready; old pod(s) {', '.join(stopping)} still stopping")
            if rolled:
                return Verdict(True, f"{name}: {want}/{want} pods Ready")
            if not failure:
                why = self.why_not_rolled_out(dep, pods)
                if why:
                    progress += f"; {why}"
                elif ready >= want:  # Ready pods, but not yet the new ones, or old ones still there
                    progress += (f"; rollout in progress: {st.updated_replicas or 0}/{want} updated, "
                                 f"{st.replicas or 0} in all")
            return Verdict(False, f"{name}: {progress}", failure)

        def events_of() -> list[str]:
            dep = self.apps.read_namespaced_deployment(name, namespace)
            return self.pod_warnings(namespace, _selector(dep))

        return self.wait_for(what, evaluate, [
            (self.apps.list_namespaced_deployment, {"namespace": namespace,
                                                    "field_selector": f"metadata.name={name}"}),
            (self.core.list_namespaced_pod, {"namespace": namespace}),
        ], timeout=timeout, say=say, events_of=events_of)

    def wait_namespace_ready(self, namespace: str, *, timeout: float | None = None, what: str = "",
                             say: Callable[[str], None] = lambda m: None, min_pods: int = 1,
                             refusals: Sequence = ()) -> str:
        """Until every Deployment/StatefulSet/DaemonSet in the namespace and every pod is Ready.

        `refusals` (helm.LogRefusal): a container that exited saying one of them fails the wait at once.
        """
        what = what or f"namespace {namespace}"

        def evaluate() -> Verdict:
            pending, behind = [], []
            for dep in self.apps.list_namespaced_deployment(namespace).items:
                want = dep.spec.replicas if dep.spec.replicas is not None else 1
                if (dep.status.ready_replicas or 0) < want or (dep.status.updated_replicas or 0) < want:
                    pending.append(f"deployment {dep.metadata.name} {dep.status.ready_replicas or 0}/{want}")
                    behind.append(dep)
            for ss in self.apps.list_namespaced_stateful_set(namespace).items:
                want = ss.spec.replicas if ss.spec.replicas is not None else 1
                if (ss.status.ready_replicas or 0) < want:
                    pending.append(f"statefulset {ss.metadata.name} {ss.status.ready_replicas or 0}/{want}")
            for ds in self.apps.list_namespaced_daemon_set(namespace).items:
                want = ds.status.desired_number_scheduled or 0
                if (ds.status.number_ready or 0) < want:
                    pending.append(f"daemonset {ds.metadata.name} {ds.status.number_ready or 0}/{want}")
            pods = [p for p in self.core.list_namespaced_pod(namespace).items
                    if p.status.phase != "Succeeded"]
            ready, progress, failure = self.explain(pods, len(pods), what, namespace)
            if not pending and ready == len(pods) and len(pods) >= min_pods:
                return Verdict(True, f"{what}: {ready}/{len(pods)} pods Ready")
            failure = (self.refused(pods, refusals) if refusals else None) or failure
            if len(pods) < min_pods:
                progress = f"waiting for pods to appear ({len(pods)}/{min_pods})"
            why = next((f"deployment {d.metadata.name}: {w}" for d in behind[:3]
                        if (w := self.why_not_rolled_out(d, [p for p in pods if _selects(d, p)]))), "")
            return Verdict(False, f"{what}: {progress}" + (f"; {', '.join(pending[:3])}" if pending else "")
                           + (f"; {why}" if why and not failure else ""), failure)

        return self.wait_for(what, evaluate, [
            (self.core.list_namespaced_pod, {"namespace": namespace}),
            (self.apps.list_namespaced_deployment, {"namespace": namespace}),
        ], timeout=timeout, say=say, events_of=lambda: self.pod_warnings(namespace, ""))

    def wait_reconciled(self, group: str, version: str, plural: str, namespace: str, *, operator: str,
                        timeout: float | None = None, grace: float = OPERATOR_GRACE_S,
                        say: Callable[[str], None] = lambda m: None) -> str:
        """Until every such custom resource in the namespace has a status, written by its operator.

        An operator writes a status within seconds of seeing a resource; none
        after `grace` seconds means nothing reconciles it, and no pod will ever
        come: fail then, naming the operator, instead of waiting out the timeout.
        """
        what = f"{plural} in {namespace}"
        start = time.monotonic()

        def evaluate() -> Verdict:
            items = self.custom.list_namespaced_custom_object(group, version, namespace, plural).get("items") or []
            bare = [i["metadata"]["name"] for i in items if not i.get("status")]
            if items and not bare:
                return Verdict(True, f"{len(items)} {plural} reconciled by {operator}")
            progress = f"waiting for {operator} to reconcile {plural} {', '.join(bare)}" if bare else \
                f"no {plural} in {namespace} yet"
            failure = None
            if time.monotonic() - start > grace:
                failure = (f"{plural} {namespace}/{(bare or ['?'])[0]}: no status after {grace:.0f}s, so no {operator} "
                           f"is reconciling it and its pods will never be made; check the operator "
                           f"(`invoke status`, its pod's logs) and run again")
            return Verdict(False, progress, failure)

        return self.wait_for(what, evaluate, [], timeout=timeout, say=say, recheck=1.0)

    def api_not_ready(self) -> str | None:
        """Why the API server is not ready yet (one look at /readyz), or None when it is.

        An API server that has just (re)started answers before it is ready: with
        connection errors, with 500 while post-start hooks run, and with 403
        Forbidden to every user until its RBAC authorizer has read the role
        bindings. Those answers mean "not yet", never a failure.
        """
        try:
            self.api.call_api("/readyz", "GET", auth_settings=["BearerToken"], response_type="str",
                              _return_http_data_only=True, _request_timeout=5)
            return None
        except ApiException as exc:
            failing = [line[3:].split(" ")[0] for line in str(exc.body or "").splitlines()
                       if line.startswith("[-]")]
            reason = f"/readyz answers {exc.status} {exc.reason}" + \
                (f" (not ready: {', '.join(failing[:3])})" if failing else "")
            return reason + (" while its authorizer warms up" if exc.status == 403 else "")
        except Exception as exc:  # noqa: BLE001 - connection refused/reset while it starts
            return f"/readyz: {_stall_reason(exc)}"

    def wait_api_ready(self, *, timeout: float | None = None, say: Callable[[str], None] = lambda m: None,
                       poll: float = 0.5) -> str:
        """Until the API server's /readyz answers 200: every check passed, its authorizer included.

        No watch exists for readiness, so this one wait polls.
        """
        timeout = wait_seconds(timeout)
        start = time.monotonic()
        while True:
            if self.cancel.is_set():
                raise StepFailed("API server readiness: interrupted (Ctrl-C) while waiting")
            with self.deadline(start + timeout):
                reason = self.api_not_ready()
            if reason is None:
                return "API server ready"
            elapsed = time.monotonic() - start
            if elapsed >= timeout:
                raise WaitTimeout(f"API server of {self.context}: not ready after {timeout:.0f}s: {reason}")
            say(f"API server not ready: {reason} ({elapsed:.0f}s)")
            self.cancel.wait(poll)

    def wait_nodes_ready(self, want: int, *, timeout: float | None = None, say: Callable[[str], None] = lambda m: None) -> str:
        def evaluate() -> Verdict:
            nodes = self.core.list_node().items
            not_ready = [n.metadata.name for n in nodes if not condition_ready(n)]
            ready = len(nodes) - len(not_ready)
            if ready >= want and not not_ready:
                return Verdict(True, f"{ready}/{len(nodes)} nodes Ready")
            return Verdict(False, f"{ready}/{want} nodes Ready" +
                           (f"; not Ready: {', '.join(not_ready[:5])}" if not_ready else ""))

        return self.wait_for("nodes", evaluate, [(self.core.list_node, {})], timeout=timeout, say=say)

    def wait_service_account(self, namespace: str = "default", name: str = "default", *,
                             timeout: float | None = None, say: Callable[[str], None] = lambda m: None) -> str:
        """Pods cannot be created before the namespace's default ServiceAccount exists."""
        def evaluate() -> Verdict:
            try:
                self.core.read_namespaced_service_account(name, namespace)
                return Verdict(True, f"serviceaccount {namespace}/{name} exists")
            except ApiException as exc:
                if exc.status == 404:
                    return Verdict(False, f"waiting for serviceaccount {namespace}/{name}")
                raise

        return self.wait_for("service account", evaluate,
                             [(self.core.list_namespaced_service_account, {"namespace": namespace})],
                             timeout=timeout, say=say)

    # --- one level up: why pods are missing -----------------------------------
    def why_not_rolled_out(self, dep, pods: list) -> str:
        """Why a Deployment lacks pods, which the pods themselves cannot say: a controller-manager
        or scheduler that is not running, or the ReplicaSet failing to create them; "" when none of these."""
        want = dep.spec.replicas if dep.spec.replicas is not None else 1
        live = [p for p in pods if not p.metadata.deletion_timestamp]
        unplaced = [p for p in live if not p.spec.node_name]
        unseen = (dep.status.observed_generation or 0) < (dep.metadata.generation or 0)
        if len(live) >= want and not unplaced and not unseen:
            # every pod is there: a status that still lags behind them is the controller-manager's to write
            st = dep.status  # the Ready counts too: a controller-manager gone after counting the pods stops there
            counted = (st.updated_replicas, st.replicas, st.ready_replicas, st.available_replicas)
            lags = min(n or 0 for n in counted) < want
            return self.leaders_down().get("kube-controller-manager", "") if lags else ""
        down = self.leaders_down()
        if (len(live) < want or unseen) and "kube-controller-manager" in down:
            return down["kube-controller-manager"]
        if unplaced and "kube-scheduler" in down:  # and a controller-manager gone too: both, one restart
            also = down.get("kube-controller-manager")
            return down["kube-scheduler"] + (f"; also {also}" if also else "")
        if len(live) >= want:
            return ""
        missing = f"{want - len(live)} pod(s) not created"
        failure = self.replica_failure(dep)
        return f"{missing}: {failure}" if failure else missing

    def leases(self) -> dict[str, tuple[float, float]]:
        """The leader leases of LEADERS that exist: name -> (last renewal, as time.time(); duration s)."""
        found = {}
        for name in LEADERS:
            try:
                spec = self.coordination.read_namespaced_lease(name, "kube-system").spec
            except ApiException as exc:
                if exc.status in (403, 404):  # no leader election here, or not ours to read
                    continue
                raise
            if spec.renew_time is not None:
                found[name] = (spec.renew_time.timestamp(), float(spec.lease_duration_seconds or 15))
        return found

    def leaders_down(self) -> dict[str, str]:
        """The components of LEADERS whose lease nobody renews, each with a sentence.

        A lease that went unrenewed while the API server itself did not answer is not its holder's
        failure: the holder gets a lease's length from when the API server answered again.
        """
        down = {}
        for name, (renewed, duration) in self.leases().items():
            if time.time() - max(renewed, self.back_at) > duration + LEASE_SLACK_S:
                who, consequence = LEADERS[name]
                # measured on kwok: a 20 s stall makes the controller-manager exit ("leaderelection lost")
                why = (": it lost its lease while the API server did not answer (a leader that cannot renew its "
                       "lease exits)" if renewed <= self.back_at else "")
                down[name] = (f"the {who} is not running (its lease kube-system/{name} was last renewed "
                              f"{time.time() - renewed:.0f}s ago{why}), so {consequence}; {self.fix}")
        return down

    def replica_failure(self, dep) -> str:
        """The ReplicaSets' and the Deployment's own word on failing to create pods (FailedCreate:
        a quota, an admission webhook, a missing ServiceAccount), from their conditions or Warning events."""
        namespace = dep.metadata.namespace
        sets = [rs for rs in self.apps.list_namespaced_replica_set(namespace, label_selector=_selector(dep)).items
                if any(o.uid == dep.metadata.uid for o in rs.metadata.owner_references or [])]
        for obj, kind in [(rs, "replicaset") for rs in sets] + [(dep, "deployment")]:
            for c in obj.status.conditions or []:
                if c.type == "ReplicaFailure" and c.status == "True":
                    return f"{kind} {obj.metadata.name}: {c.reason}: {(c.message or '').strip()}"
        owners = {("ReplicaSet", rs.metadata.name) for rs in sets} | {("Deployment", dep.metadata.name)}
        events = [e for e in self.core.list_namespaced_event(namespace, field_selector="type=Warning").items
                  if (e.involved_object.kind, e.involved_object.name) in owners]
        latest = max(events, key=_event_time, default=None)
        if latest is None:
            return ""
        return (f"{latest.involved_object.kind.lower()} {latest.involved_object.name}: {latest.reason}: "
                f"{(latest.message or '').strip()}")

    # --- raw reads -----------------------------------------------------------
    def get_json(self, path: str, *, accept: str = "application/json", **query) -> dict:
        """GET an API path as plain JSON, bypassing the client's strict models.

        The models refuse objects the API server really sends: an EndpointSlice
        of a Service without pods has `endpoints: null` (client 33.1.0 raises
        ValueError), and a multi-megabyte CRD costs seconds to model. Objects
        like these are read here instead.
        """
        response = self.api.call_api(
            path, "GET", query_params=[(k, v) for k, v in query.items() if v is not None],
            header_params={"Accept": accept}, auth_settings=["BearerToken"],
            _preload_content=False, _return_http_data_only=True)
        return json.loads(response.data or b"null") or {}

    def ready_endpoints(self, namespace: str, service: str) -> int:
        """Ready endpoint addresses of a Service, from its EndpointSlices (read raw: see get_json)."""
        slices = self.get_json(f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                               labelSelector=f"kubernetes.io/service-name={service}").get("items") or []
        return sum(1 for s in slices for ep in (s.get("endpoints") or [])
                   if (ep.get("conditions") or {}).get("ready") is not False)

    def crd(self, name: str) -> dict | None:
        """A CustomResourceDefinition as JSON, or None when absent."""
        try:
            return self.get_json(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def crd_annotations(self) -> dict[str, dict]:
        """Every CRD's name -> annotations, from one metadata-only list (no multi-MB schemas)."""
        items = self.get_json("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                              accept=METADATA_LIST).get("items") or []
        return {i["metadata"]["name"]: i["metadata"].get("annotations") or {} for i in items}

    def pod_warnings(self, namespace: str, selector: str, limit: int = 3) -> list[str]:
        """The latest Warning events of the pods that are not Ready (FailedScheduling, BackOff...)."""
        waiting = {p.metadata.name for p in self.core.list_namespaced_pod(namespace, label_selector=selector).items
                   if not pod_state(p).ready}
        if not waiting:
            return []
        events = [e for e in self.core.list_namespaced_event(namespace, field_selector="type=Warning").items
                  if e.involved_object.kind == "Pod" and e.involved_object.name in waiting]
        events.sort(key=_event_time)
        return [f"{e.involved_object.name}: {e.reason}: {(e.message or '').strip()}" for e in events[-limit:]]


def _selector(dep) -> str:
    return ",".join(f"{k}={v}" for k, v in (dep.spec.selector.match_labels or {}).items())


def _selects(dep, pod) -> bool:
    labels = pod.metadata.labels or {}
    return all(labels.get(k) == v for k, v in (dep.spec.selector.match_labels or {}).items())


def _event_time(event) -> str:
    return str(event.last_timestamp or event.event_time or event.metadata.creation_timestamp)


def condition_ready(obj) -> bool:
    """Whether a node's or a pod's Ready condition is True."""
    return any(c.type == "Ready" and c.status == "True" for c in (obj.status.conditions or []))

"""Why a pod is not Ready, and when waiting longer cannot help."""
from datetime import datetime, timedelta, timezone

from kubernetes.client import (V1ContainerState, V1ContainerStateRunning, V1ContainerStateWaiting,
                               V1ContainerStatus, V1ObjectMeta, V1Pod, V1PodCondition, V1PodSpec,
                               V1PodStatus)

from playbooks.core.kube import explain, pod_state


def pod(name, *, ready=False, waiting=None, message="", restarts=0, unschedulable=None, age_s=5, phase="Pending"):
    created = datetime.now(timezone.utc) - timedelta(seconds=age_s)
    conditions = [V1PodCondition(type="Ready", status="True" if ready else "False")]
    if unschedulable:
        conditions = [V1PodCondition(type="PodScheduled", status="False", reason="Unschedulable",
                                     message=unschedulable)]
    state = V1ContainerState(waiting=V1ContainerStateWaiting(reason=waiting, message=message)) if waiting \
        else V1ContainerState(running=V1ContainerStateRunning())
    statuses = [V1ContainerStatus(name="c", image="i", image_id="", ready=ready, restart_count=restarts,
                                  state=state)]
    return V1Pod(metadata=V1ObjectMeta(name=name, creation_timestamp=created),
                 spec=V1PodSpec(containers=[], restart_policy="Always"),
                 status=V1PodStatus(phase="Running" if ready else phase, conditions=conditions,
                                    container_statuses=None if unschedulable else statuses))


def test_ready_and_container_creating():
    assert pod_state(pod("a", ready=True)).ready
    s = pod_state(pod("b", waiting="ContainerCreating"))
    assert not s.ready and s.reason == "ContainerCreating" and not s.terminal


def test_missing_image_is_terminal_at_once():
    s = pod_state(pod("b", waiting="ImagePullBackOff",
                      message='Back-off pulling image "nginx:nope": not found'))
    assert s.terminal and s.reason == "ImagePullBackOff"


def test_slow_pull_is_not_terminal_until_the_grace_runs_out():
    young = pod("b", waiting="ErrImagePull", message="rpc error: context deadline exceeded", age_s=10)
    old = pod("b", waiting="ErrImagePull", message="rpc error: context deadline exceeded", age_s=600)
    assert not pod_state(young).terminal and pod_state(old).terminal


def test_crash_loop_is_terminal_after_three_restarts():
    assert not pod_state(pod("c", waiting="CrashLoopBackOff", restarts=1)).terminal
    assert pod_state(pod("c", waiting="CrashLoopBackOff", restarts=3)).terminal


def test_unschedulable_carries_the_scheduler_message():
    s = pod_state(pod("d", unschedulable="0/1 nodes are available: 1 Insufficient cpu."))
    assert s.reason == "Unschedulable" and "Insufficient cpu" in s.message and not s.terminal


def test_explain_names_pod_reason_and_next_step():
    pods = [pod("nginx-1", ready=True), pod("nginx-2", ready=True),
            pod("nginx-3", waiting="ImagePullBackOff", message='image "nginx:nope" not found')]
    ready, progress, failure = explain(pods, 3, "nginx", "kwok-t1", "default")
    assert ready == 2 and progress.startswith("2/3 pods Ready; nginx-3: ImagePullBackOff")
    assert failure.startswith("nginx: 2/3 pods Ready; nginx-3: ImagePullBackOff")
    assert "check the image name" in failure
    crash = explain([pod("w-1", waiting="CrashLoopBackOff", restarts=4)], 1, "w", "kwok-t1", "ns")[2]
    assert "kubectl --context kwok-t1 -n ns logs w-1 --previous" in crash


def test_a_pull_error_is_final_after_the_grace_counted_from_when_it_was_first_seen():
    # a big image pulled for ten minutes, then an error: the grace starts at the error, not at the pod's birth
    long_pull = pod("ray-head", waiting="ErrImagePull", message="rpc error: context deadline exceeded", age_s=600)
    now = datetime.now(timezone.utc).timestamp()
    assert not pod_state(long_pull, now, pull_error_since=now - 10).terminal
    assert pod_state(long_pull, now, pull_error_since=now - 100).terminal


def _unschedulable(age_s):
    p = pod("ray-worker", unschedulable="0/1 nodes are available: 1 Insufficient cpu.", age_s=age_s)
    p.status.conditions[0].last_transition_time = p.metadata.creation_timestamp
    return p


def test_insufficient_resources_are_final_after_a_short_grace_only_where_no_node_can_be_added():
    assert not pod_state(_unschedulable(45)).terminal  # an existing cluster may have an autoscaler
    assert not pod_state(_unschedulable(10), fixed_nodes=True).terminal
    assert pod_state(_unschedulable(45), fixed_nodes=True).terminal


def _initializing():
    from kubernetes.client import V1ContainerStateTerminated
    p = pod("raylab-worker-x", waiting="PodInitializing")
    done = V1ContainerStatus(name="fetch", image="i", image_id="", ready=True, restart_count=0,
                             state=V1ContainerState(terminated=V1ContainerStateTerminated(exit_code=0)))
    running = V1ContainerStatus(name="wait-gcs-ready", image="i", image_id="", ready=False, restart_count=0,
                                state=V1ContainerState(running=V1ContainerStateRunning()))
    p.status.init_container_statuses = [done, running]
    p.metadata.uid = "u1"
    return p


def test_a_pod_held_in_its_init_containers_names_the_running_one():
    state = pod_state(_initializing())
    assert (state.reason, state.message, state.init_container) == (
        "PodInitializing", "init container wait-gcs-ready running", "wait-gcs-ready")


class FakeCore:
    """What Kube.explain reads beside the pods: logs, pull events, nodes and pods for free room."""

    def __init__(self, events=(), log="", nodes=(), pods=()):
        self.events, self.log, self.nodes, self.pods = events, log, nodes, pods
        self.log_calls = []

    def read_namespaced_pod_log(self, name, namespace, container, tail_lines):
        self.log_calls.append((name, container, tail_lines))
        return self.log

    def list_namespaced_event(self, namespace, field_selector):
        from types import SimpleNamespace as NS
        reason = field_selector.rsplit("=", 1)[1]
        return NS(items=[e for e in self.events if e.reason == reason])

    def list_node(self):
        from types import SimpleNamespace as NS
        return NS(items=list(self.nodes))

    def list_pod_for_all_namespaces(self, field_selector):
        from types import SimpleNamespace as NS
        return NS(items=list(self.pods))


def _kube(core, fixed_nodes=True):
    from playbooks.core.kube import Kube
    kube = Kube.__new__(Kube)  # no kubeconfig: only what explain reads
    kube.context, kube.core, kube.fixed_nodes, kube._pull_errors = "kind-lab", core, fixed_nodes, {}
    return kube


def test_the_wait_quotes_the_running_init_containers_last_log_line():
    core = FakeCore(log="2026-11-26 10:00:01 INFO Failed to connect to GCS at raylab-head-svc:6379\n")
    ready, progress, failure = _kube(core).explain([_initializing()], 1, "ray pods", "ray")
    assert "raylab-worker-x: PodInitializing (init container wait-gcs-ready running; its last log line: " \
           "2026-11-26 10:00:01 INFO Failed to connect to GCS at raylab-head-svc:6379)" in progress
    assert core.log_calls == [("raylab-worker-x", "wait-gcs-ready", 1)] and failure is None


def test_a_pull_in_progress_is_shown_with_its_image_and_how_long_it_has_run():
    from types import SimpleNamespace as NS
    started = datetime.now(timezone.utc) - timedelta(seconds=40)
    pulling = NS(reason="Pulling", message='Pulling image "rayproject/ray:2.52.0-py311"', last_timestamp=started,
                 event_time=None, metadata=NS(creation_timestamp=started), involved_object=NS(name="head-1"))
    creating = pod("head-1", waiting="ContainerCreating")
    _, progress, _ = _kube(FakeCore(events=[pulling])).explain([creating], 1, "ray pods", "ray")
    assert 'head-1: ContainerCreating (pulling "rayproject/ray:2.52.0-py311" for 40s)' in progress
    pulled = NS(reason="Pulled", message="Successfully pulled", last_timestamp=datetime.now(timezone.utc),
                event_time=None, metadata=NS(creation_timestamp=started), involved_object=NS(name="head-1"))
    _, progress, _ = _kube(FakeCore(events=[pulling, pulled])).explain([creating], 1, "ray pods", "ray")
    assert "pulling" not in progress  # pulled: now it is the container starting


def test_a_pod_that_cannot_fit_fails_with_what_it_asks_and_what_the_nodes_have_free():
    from types import SimpleNamespace as NS
    p = _unschedulable(45)
    p.spec.containers = [NS(resources=NS(requests={"cpu": "1", "memory": "2Gi"}))]
    node = NS(metadata=NS(name="lab-control-plane"), spec=NS(taints=None),
              status=NS(allocatable={"cpu": "2", "memory": "8Gi", "pods": "110"}))
    system = NS(metadata=NS(namespace="kube-system"),
                spec=NS(node_name="lab-control-plane", containers=[NS(resources=NS(requests={"cpu": "1450m"}))]))
    _, _, failure = _kube(FakeCore(nodes=[node], pods=[system])).explain([p], 1, "ray pods", "ray")
    assert failure and "Insufficient cpu" in failure
    assert "it requests 1000m CPU / 2048Mi; the roomiest of 1 node(s) has 550m CPU / 8192Mi free" in failure
    assert "lower its requests, free resources or add nodes" in failure


def test_a_container_that_exits_saying_it_refuses_fails_the_wait_with_its_reason_reading_its_log_once():
    """OpenFaaS CE's faas-netes without internet: it exits at once; its log says why (the chart's trait)."""
    from types import SimpleNamespace

    from kubernetes.client import V1ContainerStateTerminated

    from playbooks import faas
    from playbooks.core.kube import Kube

    line = "2026/12/07 Error checking connectivity, OpenFaaS CE cannot be run in an offline environment"
    reads = []

    def read_log(name, namespace, container, previous, tail_lines):
        reads.append((name, container, previous))
        return f"starting\n{line}\n" if container == "faas-netes" else "listening\n"

    gateway = pod("gateway-7d9f", waiting="CrashLoopBackOff", restarts=1)
    gateway.metadata.uid, gateway.metadata.namespace = "uid-1", "openfaas"
    exited = V1ContainerState(terminated=V1ContainerStateTerminated(exit_code=1, reason="Error"))
    gateway.status.container_statuses = [
        V1ContainerStatus(name="gateway", image="i", image_id="", ready=False, restart_count=0,
                          state=V1ContainerState(running=V1ContainerStateRunning())),
        V1ContainerStatus(name="faas-netes", image="i", image_id="", ready=False, restart_count=1,
                          state=V1ContainerState(waiting=V1ContainerStateWaiting(reason="CrashLoopBackOff")),
                          last_state=exited)]
    kube = Kube.__new__(Kube)  # only the log reader: no cluster behind it
    kube._exit_logs, kube.core = {}, SimpleNamespace(read_namespaced_pod_log=read_log)
    failure = kube.refused([gateway], faas.RELEASE.refusals)
    assert failure.startswith("OpenFaaS CE refuses to start without internet")
    assert "gateway-7d9f, container faas-netes exited: " + line in failure
    assert "invoke faas.install --offline" in failure
    assert reads == [("gateway-7d9f", "faas-netes", True)]  # the previous run's log, of that container alone
    kube.refused([gateway], faas.RELEASE.refusals)
    assert len(reads) == 1  # the same run is not read twice
    running = pod("gateway-7d9f", waiting="ContainerCreating")
    running.metadata.uid, running.metadata.namespace = "uid-2", "openfaas"
    assert kube.refused([running], faas.RELEASE.refusals) is None and len(reads) == 1


def test_pods_ready_but_a_status_not_counting_them_ready_blames_a_controller_manager_that_is_down():
    """Seen under load (the kwok fault test, beside the kind tests): the controller-manager counted the new
    pod (updated 2, replicas 2) and lost its lease before it saw it Ready; the pods are Ready, the status
    never says so. That lag is the controller-manager's too."""
    from kubernetes.client import (V1Deployment, V1DeploymentSpec, V1DeploymentStatus, V1LabelSelector,
                                   V1PodTemplateSpec)

    from playbooks.core.kube import Kube

    down = "the controller-manager is not running (its lease kube-system/kube-controller-manager ...)"
    kube = Kube.__new__(Kube)
    kube.leaders_down = lambda: {"kube-controller-manager": down}
    dep = V1Deployment(metadata=V1ObjectMeta(name="nginx", generation=3),
                       spec=V1DeploymentSpec(replicas=2, selector=V1LabelSelector(match_labels={"app": "nginx"}),
                                             template=V1PodTemplateSpec()),
                       status=V1DeploymentStatus(observed_generation=3, updated_replicas=2, replicas=2,
                                                 ready_replicas=1, available_replicas=1))
    pods = [pod("a", ready=True), pod("b", ready=True)]
    for p in pods:
        p.spec.node_name = "kwok-node-0"
    assert kube.why_not_rolled_out(dep, pods) == down
    dep.status.ready_replicas = dep.status.available_replicas = 2
    assert kube.why_not_rolled_out(dep, pods) == ""  # nothing lags: nothing to blame


def test_an_unplaced_pod_names_the_scheduler_and_a_controller_manager_gone_with_it():
    """Seen under load: the controller-manager made the pod before the stall, then both leaders lost their
    leases. The pod waits on the scheduler, and the controller-manager is named too: both are down."""
    from kubernetes.client import (V1Deployment, V1DeploymentSpec, V1DeploymentStatus, V1LabelSelector,
                                   V1PodTemplateSpec)

    from playbooks.core.kube import Kube

    down = {"kube-scheduler": "the scheduler is not running (...), so no pod is being placed on a node",
            "kube-controller-manager": "the controller-manager is not running (...)"}
    kube = Kube.__new__(Kube)
    kube.leaders_down = lambda: dict(down)
    dep = V1Deployment(metadata=V1ObjectMeta(name="nginx", generation=3),
                       spec=V1DeploymentSpec(replicas=2, selector=V1LabelSelector(match_labels={"app": "nginx"}),
                                             template=V1PodTemplateSpec()),
                       status=V1DeploymentStatus(observed_generation=3, updated_replicas=2, replicas=2,
                                                 ready_replicas=1, available_replicas=1))
    placed, waiting = pod("a", ready=True), pod("b", phase="Pending")
    placed.spec.node_name = "kwok-node-0"
    assert kube.why_not_rolled_out(dep, [placed, waiting]) == \
        f"{down['kube-scheduler']}; also {down['kube-controller-manager']}"
    del down["kube-controller-manager"]
    assert kube.why_not_rolled_out(dep, [placed, waiting]) == down["kube-scheduler"]

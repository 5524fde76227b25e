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

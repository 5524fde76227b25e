"""The cluster play on the kwok testbed: idempotent create/delete, real waits, diagnostics."""
import subprocess
import time
from dataclasses import replace

import pytest
import yaml

from playbooks import cluster
from playbooks.core.runner import PlayFailed
from playbooks.core.resources import applied


def test_create_on_an_existing_cluster_changes_nothing(play, testbed):
    outcomes = play(cluster.create_steps(testbed))
    assert [o.status for o in outcomes] == ["ok"] * len(outcomes), play.output


def test_check_mode_on_a_converged_cluster_reports_no_change(play, testbed):
    outcomes = play(cluster.create_steps(testbed), check_mode=True)
    assert all(o.status == "ok" for o in outcomes), play.output


def test_the_context_is_merged_without_becoming_current(testbed):
    config = yaml.safe_load(testbed.kubeconfig.read_text())
    assert testbed.context in [c["name"] for c in config["contexts"]]
    assert config.get("current-context", "") in ("", None)


def test_nodes_are_ready_with_the_stated_capacity(kube, testbed):
    nodes = kube.core.list_node().items
    assert len(nodes) == testbed.kwok.nodes
    for node in nodes:
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
        assert node.status.allocatable["cpu"] == "4" and node.status.allocatable["memory"] == "8Gi"


def deployment(name, image="registry.example/app:1.0", replicas=1, labels=None, cpu="100m",
               annotations=None):
    pod_labels = {"app": name, **(labels or {})}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": pod_labels, "annotations": annotations or {}},
                                  "spec": {"containers": [{"name": "main", "image": image,
                                                           "resources": {"requests": {"cpu": cpu}}}]}}}}


def deploy_step(lab, doc, timeout=None):
    lab = replace(lab, timeout=timeout or lab.timeout)
    name = doc["metadata"]["name"]
    return applied(f"deployment {name}", lab, lambda: [doc],
                   wait=lambda ctx: ctx.kube.wait_deployment("default", name, timeout=lab.timeout, say=ctx.say))


def test_deployment_applied_waits_ready_then_is_unchanged(play, testbed, kube):
    doc = deployment("web", replicas=2, annotations={"kindlab.dev/ready-delay": "1500ms"})
    first = play([deploy_step(testbed, doc)])
    assert first[0].status == "changed"
    # the wait returned only once every pod was Ready, after showing them ContainerCreating
    assert "ContainerCreating" in play.output
    pods = kube.core.list_namespaced_pod("default", label_selector="app=web").items
    assert len(pods) == 2 and all(p.status.phase == "Running" for p in pods)
    assert all(any(c.type == "Ready" and c.status == "True" for c in p.status.conditions) for p in pods)
    again = play([deploy_step(testbed, doc)])
    assert again[0].status == "ok", play.output


def test_unschedulable_pod_is_explained_with_the_scheduler_message(play, testbed):
    doc = deployment("too-big", cpu="64")
    with pytest.raises(PlayFailed):
        play([deploy_step(testbed, doc, timeout=4)])
    out = play.output
    assert "too-big" in out and "Unschedulable" in out and "Insufficient cpu" in out
    assert "not ready after 4s" in out
    assert "recent warnings:" in out and "FailedScheduling" in out  # the scheduler's own event


def test_a_pod_too_big_for_any_node_fails_after_the_short_grace_with_the_figures(play, testbed):
    doc = deployment("far-too-big", cpu="64")
    with pytest.raises(PlayFailed):
        play([deploy_step(testbed, doc, timeout=120)])
    said = " ".join(play.output.split())
    assert "not ready after" not in said  # the nodes cannot grow here: it failed on the reason, well before 120 s
    assert "far-too-big" in said and "Insufficient cpu" in said
    assert "it requests 64000m CPU / 0Mi; the roomiest of 2 node(s) has" in said
    assert "lower its requests, free resources or add nodes" in said


def test_image_pull_backoff_fails_fast_naming_pod_and_reason(play, testbed):
    doc = deployment("bad-image", image="missing.kindlab.invalid/app:0.0")
    with pytest.raises(PlayFailed):
        play([deploy_step(testbed, doc, timeout=60)])
    assert "not ready after" not in play.output  # failed on the reason, not by running out the timeout
    out = play.output
    assert "bad-image-" in out and "ImagePullBackOff" in out and "check the image name" in out


def test_crash_loop_fails_fast_with_the_logs_command(play, testbed):
    doc = deployment("crashy", labels={"kindlab.dev/fault": "CrashLoopBackOff"})
    with pytest.raises(PlayFailed):
        play([deploy_step(testbed, doc, timeout=60)])
    assert "CrashLoopBackOff" in play.output and "--previous" in play.output


def test_delete_of_an_absent_cluster_is_ok(play, testbed):
    ghost = replace(testbed, cluster="kindlab-absent")
    outcomes = play(cluster.delete_steps(ghost), lab=ghost)
    assert [o.status for o in outcomes] == ["ok", "ok", "ok", "ok"], play.output


def _processes_mentioning(text):
    out = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if text in line and "pytest" not in line]


def test_a_second_cluster_is_created_and_deleted_leaving_no_process(testbed):
    from tests.conftest import PlayRun
    lab = replace(testbed, cluster=f"{testbed.cluster}-life", kwok=replace(testbed.kwok, nodes=1))
    run = PlayRun(lab)
    created = run(cluster.create_steps(lab))
    assert created[0].status == "changed", run.output
    assert _processes_mentioning(f"clusters/{lab.cluster}")
    # the operators run beside it, pointed at its API server
    assert {o.step: o.status for o in created}[f"operators of {lab.cluster} running"] == "changed"
    assert len(_processes_mentioning("prometheus-operator --web.listen-address")) >= 1
    assert all(o.status == "ok" for o in run(cluster.create_steps(lab))), run.output
    written = [p for p in lab.home.rglob("*") if lab.cluster in str(p.relative_to(lab.home))]
    assert any(p.name == "prometheus-operator.log" for p in written), written  # the operators' files, say
    deleted = run(cluster.delete_steps(lab))
    assert [o.status for o in deleted] == ["changed", "changed", "changed", "changed"], run.output
    deadline = time.monotonic() + 10
    while _processes_mentioning(f"clusters/{lab.cluster}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_mentioning(f"clusters/{lab.cluster}")
    # nothing kindlab wrote for it is left: its kubeconfig, kwokctl config, operators' pid and log files
    assert not [p for p in lab.home.rglob("*") if lab.cluster in str(p.relative_to(lab.home))]
    assert [o.status for o in run(cluster.delete_steps(lab))] == ["ok", "ok", "ok", "ok"]

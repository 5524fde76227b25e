"""The path every user takes, on a real kind cluster from kindlab's offline images.

The tests run in file order on one cluster: create and rerun, a stopped node
restarted, nginx scaled to three and served over real HTTP, an unpullable image
diagnosed by a real kubelet, and at the end cluster.delete leaving nothing of
kindlab's behind.
"""
import subprocess
import urllib.request

import pytest

from playbooks import parts
from playbooks import cluster, faas, images, lab as lab_play, nginx
from playbooks.core.cli import make_context
from playbooks.core.kube import condition_ready
from playbooks.core.commands import LocalShell
from playbooks.core.resources import applied
from playbooks.core.runner import PlayFailed

from ..conftest import PlayRun
from .conftest import kind_containers


@pytest.fixture(scope="module")
def lab(real_lab):
    run = PlayRun(real_lab)
    run(cluster.delete_steps(real_lab))  # a leftover of an interrupted session
    yield real_lab
    run(cluster.delete_steps(real_lab))


@pytest.fixture
def play(lab):
    return PlayRun(lab)


@pytest.fixture
def sh(lab):
    return LocalShell(lab.tools_dir)


def statuses(outcomes):
    return {o.step: o.status for o in outcomes}


def lab_changes(outcomes):
    """Steps that changed the lab (an action, like a verify, reports `changed` each time it runs)."""
    return [o.step for o in outcomes if o.status == "changed" and not o.action]


def test_create_makes_a_ready_cluster_from_kindlabs_node_image_and_a_rerun_changes_nothing(play, lab, sh):
    first = play(cluster.create_steps(lab))
    assert statuses(first)[f"kind cluster {lab.cluster}"] == "changed", play.output
    assert "8/8 pods Ready" in play.output or "pods Ready" in play.output
    node = f"{lab.cluster}-control-plane"
    image = sh.run(["docker", "inspect", "--format", "{{.Config.Image}}", node]).stdout.strip()
    assert image == images.reference("node")
    again = play(cluster.create_steps(lab))
    assert set(statuses(again).values()) == {"ok"}, play.output


def test_a_stopped_node_is_started_and_the_cluster_is_ready_on_the_first_run(play, lab, sh):
    """Defect 1: a restarted API server answers 403 until its authorizer is warm; the run must wait it out."""
    node = f"{lab.cluster}-control-plane"
    sh.run(["docker", "stop", node], timeout=120)
    outcomes = play(cluster.create_steps(lab))  # raises PlayFailed (test fails) on the 403
    result = statuses(outcomes)
    assert result[f"kind nodes of {lab.cluster} running"] == "changed"
    assert result[f"nodes of {lab.context} Ready"] == "ok", play.output
    nodes = subprocess.run(["kubectl", "--kubeconfig", str(lab.kubeconfig), "--context", lab.context,
                            "get", "nodes", "--no-headers"], capture_output=True, text=True,
                           env=sh.env()).stdout
    assert " Ready " in nodes


def test_nginx_scaled_to_three_is_served_over_real_http_and_a_rerun_changes_nothing(play, lab):
    steps = nginx.deploy_steps(lab) + nginx.scale_steps(lab, 3) + nginx.verify_steps(lab)
    first = play(steps)
    assert statuses(first)["nginx image(s) in the kind nodes"] == "changed", play.output
    verify = {o.step: o for o in first}["nginx answers"]
    assert verify.status == "changed" and verify.action and "serves the nginx welcome page" in verify.detail
    with urllib.request.urlopen(f"http://127.0.0.1:{lab.nginx_port}/", timeout=10) as response:
        assert response.status == 200 and response.headers["Server"].startswith("nginx")
        assert "Welcome to nginx!" in response.read().decode()
    kube = make_context(lab).kube
    pods = kube.core.list_namespaced_pod("default", label_selector="app=nginx").items
    ready = [p for p in pods if condition_ready(p)]
    assert len(ready) == 3
    assert {p.spec.containers[0].image for p in pods} == {images.reference("nginx")}  # Debian's, built here
    again = play(steps)
    assert lab_changes(again) == [] and "failed" not in statuses(again).values(), play.output


def test_an_unpullable_image_is_diagnosed_with_the_kubelets_reason_and_a_next_step(play, lab):
    """No registry resolves here: the real kubelet reports ErrImagePull/ImagePullBackOff "no such host"."""
    name = "unpullable"
    doc = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": "main",
                                                          "image": "missing.kindlab.invalid/app:0.0"}]}}}}
    step = applied(f"deployment {name}", lab, lambda: [doc],
                   wait=lambda ctx: ctx.kube.wait_deployment("default", name, timeout=lab.timeout, say=ctx.say))
    try:
        with pytest.raises(PlayFailed):
            play([step])
        out = play.output
        assert f"{name}-" in out  # the pod by name
        assert "ImagePullBackOff" in out or "ErrImagePull" in out
        assert "no such host" in out  # the kubelet's own reason
        assert "check the image name and tag, or your network" in out
        assert "not ready after" not in out  # the diagnosis ended the wait, not the timeout
    finally:
        from playbooks.core.resources import absent
        PlayRun(lab)([absent(f"deployment {name} absent", lab, lambda: [doc])])


def test_all_offline_runs_nginx_and_skips_each_part_it_cannot_run_with_the_reason(play, lab):
    """No charts named: monitoring and ray (images built) are skipped for their charts, faas for its images."""
    outcomes = play(lab_play.all_steps(lab, parts.choose()))
    result = {o.step: o for o in outcomes}
    assert result["nginx images (offline)"].status == "ok" and result["nginx answers"].status == "changed"
    for part, keys in (("monitoring", ["monitoring"]), ("ray", ["kuberay-operator", "ray-cluster"])):
        gate = result[f"{part} images (offline)"]
        assert gate.status == "skipped" and "no chart repository is reached" in gate.detail, gate.detail
        assert all(f"set kindlab.charts.{key} to a copy of it" in gate.detail for key in keys), gate.detail
    assert "OpenFaaS" in result["faas images (offline)"].detail
    assert result["openfaas release"].status == "skipped" and result["monitoring release"].status == "skipped"
    assert lab_changes(outcomes) == [] and "failed" not in statuses(outcomes).values(), play.output


def test_the_local_registry_from_kindlabs_image_serves_images_to_the_nodes(play, lab, sh):
    """The faas part's registry, offline: kindlab's distribution image on 127.0.0.1:5001, known to containerd."""
    # A lab left running on this machine (the registry outlives none of its clusters but the last)
    # keeps its registry and the images pushed there: then the step finds it and changes nothing.
    kept = sh.run(["docker", "inspect", "--format", "{{.State.Running}}", "kind-registry"], check=False)
    first = play(faas.registry_steps(lab))
    if kept.stdout.strip() == "true":
        assert statuses(first)["registry kind-registry running"] == "ok", play.output
    else:
        assert statuses(first)["registry kind-registry running"] == "changed", play.output
        image = sh.run(["docker", "inspect", "--format", "{{.Config.Image}}", "kind-registry"]).stdout.strip()
        assert image == images.reference("registry")
    pushed = "localhost:5001/kindlab-test/nginx:1"
    sh.run(["docker", "tag", images.reference("nginx"), pushed])
    sh.run(["docker", "push", pushed], timeout=120)
    name = "from-registry"
    doc = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": "main", "image": pushed,
                                                          "imagePullPolicy": "Always"}]}}}}
    step = applied(f"deployment {name}", lab, lambda: [doc],
                   wait=lambda ctx: ctx.kube.wait_deployment("default", name, timeout=120, say=ctx.say))
    play([step])  # pulled by the node's containerd from the registry container
    again = play(faas.registry_steps(lab))
    assert set(statuses(again).values()) == {"ok"}, play.output
    sh.run(["docker", "image", "rm", pushed], check=False)


def test_delete_leaves_no_container_or_network_of_kindlabs_behind(play, lab, sh):
    outcomes = play(cluster.delete_steps(lab))
    assert statuses(outcomes)[f"kind cluster {lab.cluster} absent"] == "changed"
    assert kind_containers(sh, lab.cluster) == []
    others = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True, env=sh.env()).stdout.split()
    if not [c for c in others if c not in ("No", "kind", "clusters", "found.")]:
        # the last kind cluster: the registry container and the kind network go too
        assert sh.run(["docker", "ps", "-a", "--filter", "label=kindlab.dev/part", "--format", "{{.Names}}"]).stdout == ""
        network = sh.run(["docker", "network", "ls", "--filter", "name=^kind$", "--format", "{{.Name}}"]).stdout
        assert network.strip() == ""
    again = play(cluster.delete_steps(lab))
    assert set(statuses(again).values()) == {"ok"}, play.output

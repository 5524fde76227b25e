"""The path every user takes, on a real kind cluster from kindlab's offline images.

The tests run in file order on one cluster: create and rerun, a stopped node
restarted, nginx scaled to three and served over real HTTP, an unpullable image
diagnosed by a real kubelet, `all --offline` with the reverse function built by
the real faas-cli from the archived template, pushed to the lab's registry,
pulled by the kubelet and answering real HTTP (an edit redeployed, an unchanged
rerun, the removal), faas-netes's offline refusal named in seconds (a stand-in
chart with the real one's trait), and at the end cluster.delete leaving nothing
of kindlab's behind.
"""
import re
import shutil
import subprocess
import time
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from playbooks import parts
from playbooks import cluster, faas, images, lab as lab_play, nginx, providers
from playbooks.core.cli import make_context
from playbooks.core.kube import condition_ready
from playbooks.core.commands import LocalShell
from playbooks.core.helm import release_steps, uninstall_steps as helm_uninstall_steps
from playbooks.core.resources import applied
from playbooks.core.runner import PlayFailed

from ..conftest import PlayRun
from .conftest import kind_containers

ROOT = Path(__file__).resolve().parents[2]


def figure(text: str) -> None:
    """A measured figure for the log (pytest -s, or CI's captured output of a failure)."""
    print(f"\nFIGURE {text}")


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
    with urllib.request.urlopen(nginx.url(lab), timeout=10) as response:
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


def test_all_offline_runs_nginx_and_the_function_and_skips_each_part_it_cannot_run_with_the_reason(play, lab):
    """No charts named: monitoring and ray (images built) are skipped for their charts; faas runs its
    function for real, without the OpenFaaS platform, which CE's offline refusal keeps out."""
    start = time.monotonic()
    outcomes = play(lab_play.all_steps(lab, parts.choose()))
    took = time.monotonic() - start
    result = {o.step: o for o in outcomes}
    assert result["nginx images (offline)"].status == "ok" and result["nginx answers"].status == "changed"
    for part, keys in (("monitoring", ["monitoring"]), ("ray", ["kuberay-operator", "ray-cluster"])):
        gate = result[f"{part} images (offline)"]
        assert gate.status == "skipped" and "no chart repository is reached" in gate.detail, gate.detail
        assert all(f"set kindlab.charts.{key} to a copy of it" in gate.detail for key in keys), gate.detail
    assert result["monitoring release"].status == "skipped"
    # the truth, in one line: the platform is not there because OpenFaaS CE refuses to run offline
    assert result["faas images (offline)"].status == "ok"
    platform = result["openfaas release"]
    assert platform.status == "skipped" and platform.detail.startswith("OpenFaaS CE refuses to start without "
                                                                        "internet"), play.output
    assert result["function reverse image"].status in ("changed", "ok"), play.output  # ok: a registry kept
    assert result["function reverse deployed"].status == "changed", play.output
    invoked = result["invoke reverse"]
    assert invoked.status == "changed" and "'Hello World') -> 'dlroW olleH'" in invoked.detail, play.output
    figure(f"all --offline (nginx, faas; cluster there): {took:.1f} s; function image "
           f"{result['function reverse image'].seconds:.1f} s, deployed {result['function reverse deployed'].seconds:.1f} s")

    start = time.monotonic()
    again = play(lab_play.all_steps(lab, parts.choose()))
    figure(f"all --offline rerun: {time.monotonic() - start:.1f} s")
    assert lab_changes(again) == [] and "failed" not in statuses(again).values(), play.output
    assert {o.step: o for o in again}["function reverse image"].detail.endswith("(code unchanged)")


def test_the_local_registry_from_kindlabs_image_serves_images_to_the_nodes(play, lab, sh):
    """The faas part's registry, offline: kindlab's distribution image on 127.0.0.1:5001, known to containerd."""
    # A lab left running on this machine (the registry outlives none of its clusters but the last)
    # keeps its registry and the images pushed there: then the step finds it and changes nothing.
    kept = sh.run(["docker", "inspect", "--format", "{{.State.Running}}", "kind-registry"], check=False)
    first = play(providers.of(lab).registry_steps())
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
    again = play(providers.of(lab).registry_steps())
    assert set(statuses(again).values()) == {"ok"}, play.output
    sh.run(["docker", "image", "rm", pushed], check=False)


# --- the function, for real ------------------------------------------------------------
def function_pods(lab) -> list[tuple[str, object]]:
    """(image, deletion timestamp) of each of the function's pods."""
    pods = make_context(lab).kube.core.list_namespaced_pod("openfaas-fn", label_selector="faas_function=reverse").items
    return [(p.spec.containers[0].image, p.metadata.deletion_timestamp) for p in pods]


def post(lab, data: bytes) -> tuple[int, str]:
    status, body = faas.call(faas.function_url(lab), data, timeout=10)
    return status, body.decode("utf-8", "replace")


def test_the_function_answers_real_http_from_a_pod_the_kubelet_pulled_from_the_local_registry(lab, play):
    kube = make_context(lab).kube
    image = faas.function_image(lab, faas.function_hash(offline=True))
    (pod,) = kube.core.list_namespaced_pod("openfaas-fn", label_selector="faas_function=reverse").items
    assert condition_ready(pod) and pod.spec.containers[0].image == image
    assert pod.status.container_statuses[0].image_id.startswith("localhost:5001/reverse@sha256:")
    pulls = [e.message for e in kube.core.list_namespaced_event(
        "openfaas-fn", field_selector=f"involvedObject.name={pod.metadata.name},reason=Pulling").items]
    assert any(image in message for message in pulls), pulls  # pulled, not preloaded
    assert post(lab, b"Hello World") == (200, "dlroW olleH")
    # by grapheme: an accent, a skin-toned emoji and a ZWJ family stay whole; UTF-8 both ways
    assert post(lab, "héllo 👋🏽 wörld 👨‍👩‍👧".encode()) == (200, "👨‍👩‍👧 dlröw 👋🏽 olléh")
    status, body = post(lab, b"\xff\xfe")
    assert status == 400 and "not valid UTF-8" in body
    invoked = {o.step: o for o in play(faas.invoke_steps(lab, "kindlab"))}["invoke reverse"]
    assert "'kindlab') -> 'baldnik'" in invoked.detail


def test_an_edited_handler_is_rebuilt_redeployed_and_serves_the_new_answer(lab, play, tmp_path, monkeypatch):
    edited = tmp_path / "functions"
    shutil.copytree(faas.FUNCTIONS, edited, ignore=shutil.ignore_patterns("__pycache__"))
    handler = edited / "reverse" / "handler.py"
    source = handler.read_text()
    assert 'return "".join(reversed(_GRAPHEME.findall(text)))' in source
    # A mark of this run in the edit: the registry outlives test runs on one machine, and an edit
    # it already holds would rightly not be built again.
    handler.write_text(source.replace('return "".join(reversed(_GRAPHEME.findall(text)))',
                                      'return "".join(reversed(_GRAPHEME.findall(text))) + "!"')
                       + f"# edited by the test run {uuid.uuid4().hex}\n")
    monkeypatch.setattr(faas, "FUNCTIONS", edited)
    new_image = faas.function_image(lab, faas.function_hash(edited / "reverse", offline=True))
    start = time.monotonic()
    result = {o.step: o for o in play(faas.deploy_steps(lab))}
    figure(f"edited handler: rebuilt, pushed and redeployed in {time.monotonic() - start:.1f} s "
           f"(image {result['function reverse image'].seconds:.1f} s: the template's layers cached)")
    assert result["function reverse image"].status == "changed" and new_image in result["function reverse image"].detail
    assert result["function reverse deployed"].status == "changed", play.output
    assert function_pods(lab) == [(new_image, None)]  # the old one gone, not only stopping (of-watchdog serves 10 s more)
    assert post(lab, b"Hello World") == (200, "dlroW olleH!")

    monkeypatch.undo()  # the handler as committed: its image is still in the registry, so nothing is built
    back = {o.step: o for o in play(faas.deploy_steps(lab))}
    assert back["function reverse image"].status == "ok" and back["function reverse deployed"].status == "changed"
    assert function_pods(lab) == [(faas.function_image(lab, faas.function_hash(offline=True)), None)]
    assert post(lab, b"Hello World") == (200, "dlroW olleH")


def test_an_unchanged_function_is_neither_rebuilt_nor_redeployed(lab, play):
    start = time.monotonic()
    outcomes = play(faas.install_steps(lab) + faas.deploy_steps(lab))
    figure(f"faas.install + faas.deploy, unchanged: {time.monotonic() - start:.1f} s")
    assert lab_changes(outcomes) == [] and "failed" not in statuses(outcomes).values(), play.output


def test_faas_uninstall_leaves_nothing_of_the_function_behind(lab, play):
    kube = make_context(lab).kube
    outcomes = play(faas.uninstall_steps(lab))
    assert statuses(outcomes)["function reverse absent"] == "changed", play.output
    assert "openfaas-fn" not in {ns.metadata.name for ns in kube.core.list_namespace().items}
    assert kube.core.list_service_for_all_namespaces(label_selector="faas_function=reverse").items == []
    assert {o.status for o in play(faas.uninstall_steps(lab))} == {"ok"}, play.output


def test_online_a_faas_netes_that_refuses_to_run_offline_fails_the_install_in_seconds_naming_why(lab, play):
    """The trait of the real faas-netes (>= 0.18.10) on nodes without internet, in the stand-in chart: its
    container prints CE's refusal and exits. The release's wait reads it instead of waiting out the timeout."""
    online = replace(lab, offline=False, charts=(("faas", str(ROOT / "tests" / "fixtures" / "charts" / "openfaas-stub")),))
    refusal = "Error checking connectivity, OpenFaaS CE cannot be run in an offline environment"
    release = replace(faas.openfaas_release(online), values={
        "image": images.reference("nginx"),  # already on the node; its shell plays faas-netes
        "faasNetesCommand": ["sh", "-c", f"echo '{refusal}'; exit 1"]})
    try:
        start = time.monotonic()
        with pytest.raises(PlayFailed):
            play(release_steps(online, release))
        took = time.monotonic() - start
        figure(f"faas-netes's offline refusal named after {took:.1f} s (timeout {online.timeout:.0f} s)")
        failed = re.search(r"failed\s+openfaas release.*?\n(.*?)\n(?:skipped|PLAY)", play.output, re.S)
        message = " ".join(failed.group(1).split())
        assert message.startswith("OpenFaaS CE refuses to start without internet"), message
        assert f"container faas-netes exited: {refusal}" in message
        assert "not ready after" not in play.output  # named, not waited out
    finally:
        PlayRun(online)(helm_uninstall_steps(online, release, delete_namespace=True))


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

"""`--provider existing`, for real: a kind cluster kindlab did not make, reached by its context alone.

The cluster is made here as its owner would make it: plain `kind create cluster` with
kindlab's node image (and the kubeadm settings that image needs), and its owner loads
the images its workloads run (no registry serves them here). kindlab then runs nginx and
ray on it through `--provider existing --context kind-NAME`: nginx scaled and answering
over real HTTP (a port-forward: nothing of this cluster is mapped to the host), the
RayCluster sized to it, a crawl job; `down` removes the parts and leaves the cluster and
its context standing, and `cluster.delete` refuses to touch it.
"""
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from playbooks import cluster, images, lab as lab_play, nginx, parts, ray
from playbooks.core import kubeconfig
from playbooks.core.commands import LocalShell

from ..conftest import PlayRun
from .conftest import CHECKOUT, kind_containers

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "tests" / "fixtures" / "charts"
CLUSTER = f"kindlab-own-{CHECKOUT}"
OWN_IMAGES = ("nginx", "ray", "kuberay-operator", "python-docs")  # offline, ray crawls Python's docs


def figure(text: str) -> None:
    print(f"\nFIGURE {text}")


@pytest.fixture(scope="module")
def lab(real_lab):
    sh = LocalShell(real_lab.tools_dir)
    home = real_lab.home / "own"
    home.mkdir(exist_ok=True)
    kubeconfig_path = home / "kubeconfig"
    config = home / "kind.yaml"
    config.write_text(yaml.safe_dump({"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4",
                                      "kubeadmConfigPatches": images.kubeadm_patches(),
                                      "networking": {"kubeProxyMode": "nftables"}}))
    sh.run(["kind", "delete", "cluster", "--name", CLUSTER, "--kubeconfig", str(kubeconfig_path)], check=False,
           timeout=120)  # a leftover of an interrupted session
    start = time.monotonic()
    sh.run(["kind", "create", "cluster", "--name", CLUSTER, "--image", images.reference("node"), "--config",
            str(config), "--kubeconfig", str(kubeconfig_path), "--wait", "120s"], timeout=600)
    sh.run(["kind", "load", "docker-image", "--name", CLUSTER, *(images.reference(n) for n in OWN_IMAGES)],
           timeout=600)
    figure(f"the owner's kind cluster made and its images loaded in {time.monotonic() - start:.1f} s")
    lab = replace(real_lab, provider="existing", existing_context=f"kind-{CLUSTER}", kubeconfig=kubeconfig_path,
                  charts=(("kuberay-operator", str(STUBS / "kuberay-operator-stub")),
                          ("ray-cluster", str(STUBS / "ray-cluster-stub"))))
    try:
        yield lab
    finally:
        sh.run(["kind", "delete", "cluster", "--name", CLUSTER, "--kubeconfig", str(kubeconfig_path)], check=False,
               timeout=120)
        assert kind_containers(sh, CLUSTER) == []


@pytest.fixture
def play(lab):
    return PlayRun(lab)


def test_nginx_and_ray_run_on_a_cluster_kindlab_did_not_make(play, lab):
    start = time.monotonic()
    outcomes = {o.step: o for o in play(lab_play.all_steps(lab, parts.choose("nginx,ray")))}
    figure(f"all --provider existing (nginx, ray): {time.monotonic() - start:.1f} s")
    assert outcomes[f"context {lab.context}"].detail == f"using existing context {lab.context}"
    assert not [name for name in outcomes if "kind nodes" in name]  # its owner's images: kindlab loads nothing
    answered = outcomes["nginx answers"]
    assert answered.status == "changed" and "serves the nginx welcome page (3 replicas)" in answered.detail, \
        play.output
    assert answered.detail.startswith("http://127.0.0.1:") and f":{nginx.NODE_PORT.host_port}/" not in \
        answered.detail  # through a port-forward, not a host port mapping this cluster lacks
    ready = outcomes["ray head and worker pods Ready"]  # waited for: the head, the worker and the crawl's site
    assert ready.status != "failed" and ready.detail == "ray head and worker pods: 3/3 pods Ready", play.output
    crawl = outcomes["crawler job on Ray"]
    assert crawl.status == "changed" and "job finished" in crawl.detail, play.output
    again = play(lab_play.all_steps(lab, parts.choose("nginx,ray")))
    assert [o.step for o in again if o.status == "changed" and not o.action] == [], play.output
    kept = {o.step: o for o in again}["crawler job on Ray"]  # crawled once: the rerun names the kept crawl
    assert kept.status == "ok" and kept.detail.startswith("crawled before with this crawler"), play.output


def test_down_removes_the_parts_and_leaves_the_cluster_and_its_context(play, lab):
    kube_ns = lambda: {ns.metadata.name for ns in play_kube(lab).core.list_namespace().items}  # noqa: E731
    outcomes = play(lab_play.down_steps(lab, parts.choose("nginx,ray"), False))
    assert "failed" not in {o.status for o in outcomes}, play.output
    assert not kube_ns() & {"ray", "kuberay"}
    refused = {o.step: o for o in play(cluster.delete_steps(lab))}[f"context {lab.context}"]
    assert "not kindlab's to delete" in refused.detail
    clusters = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True,
                              env=LocalShell(lab.tools_dir).env()).stdout.split()
    assert CLUSTER in clusters and kubeconfig.has_context(lab.kubeconfig, lab.context)
    assert "kube-system" in kube_ns()  # still answering


def play_kube(lab):
    from playbooks.core.cli import make_context
    return make_context(lab).kube

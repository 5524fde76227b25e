"""The whole lab as its user runs it: `invoke all`, no flags, on a machine that reaches no container
registry, with the real upstream charts, on three nodes.

`invoke all` finds out by itself that it runs offline (and says so in one line), makes a kind
cluster of a control plane and two workers from kindlab's node image, and runs every part on
kindlab's images with the real charts (kube-prometheus-stack 79.9.0, KubeRay 1.7.0; OpenFaaS CE
is left out, saying why, and the function runs without it): nginx's three replicas spread over
the workers and all answer through the NodePort (kindlab's CNI routes between the nodes), the
RayCluster's head and worker on different nodes, the crawl of Python's docs exact. A rerun
changes nothing. The charts come from the project's shared sources (a user points
kindlab.charts at the same archives).
"""
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from playbooks import images, nginx
from playbooks.core.cli import make_context
from playbooks.core.commands import LocalShell
from playbooks.core.kube import condition_ready
from playbooks.core.settings import Lab
from playbooks.providers import KindProvider

from ..conftest import SHARED_SOURCES, PlayRun, unavailable
from .conftest import CHECKOUT, free_ports, kind_containers, real_required

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = f"kindlab-lab-{CHECKOUT}"
CHARTS = {"monitoring": "kube-prometheus-stack-79.9.0.tgz", "faas": "openfaas-15.0.0.tgz",
          "kuberay-operator": "kuberay-operator-1.7.0.tgz", "ray-cluster": "ray-cluster-1.7.0.tgz"}
DOCS_PAGES = 518  # Python's docs within depth 2 of their index, as the crawl test in test_real_parts counts them


def figure(text: str) -> None:
    print(f"\nFIGURE {text}")


@pytest.fixture(scope="module")
def lab(real_lab, tmp_path_factory):
    charts = {key: SHARED_SOURCES / "charts" / name for key, name in CHARTS.items()}
    missing = [str(path) for path in charts.values() if not path.is_file()]
    if missing:
        message = f"the real charts are not at hand: {', '.join(missing)}"
        unavailable(message, real_required())
    sh = LocalShell(real_lab.tools_dir)
    if KindProvider(real_lab).no_registry(sh) is None:
        pytest.skip("a container registry answers here: this test is of a machine that reaches none")
    home = tmp_path_factory.mktemp("kindlab-lab")
    nginx_port, http_port, gateway_port = free_ports(3)
    config = home / "kindlab.yaml"
    config.write_text(yaml.safe_dump({"kindlab": {
        "home": str(home), "kubeconfig": str(home / "kubeconfig"), "provider": "kind", "cluster": CLUSTER,
        "workers": 2, "ports": {"nginx": nginx_port, "http": http_port, "gateway": gateway_port},
        "charts": {key: str(path) for key, path in charts.items()}, "sources": dict(real_lab.sources)}}))
    lab = Lab(provider="kind", cluster=CLUSTER, home=home, kubeconfig=home / "kubeconfig", offline=True,
              workers=2, ports=(("nginx", nginx_port), ("http", http_port), ("gateway", gateway_port)),
              bin_dir=real_lab.tools_dir, sources=real_lab.sources,
              charts=tuple(sorted((key, str(path)) for key, path in charts.items())))
    PlayRun(lab)(KindProvider(lab).delete_steps())  # a leftover of an interrupted session
    yield lab, config
    PlayRun(lab)(KindProvider(lab).delete_steps())
    assert kind_containers(sh, CLUSTER) == []


def invoke_all(config: Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "invoke", "-f", str(config), "all"], cwd=ROOT,
                          capture_output=True, text=True, timeout=3600, env={**_env(), "COLUMNS": "250"})
    return proc, time.monotonic() - start


def failures(out: str) -> str:
    """Each failed step's line and its detail (the recap at the end of the output names them only)."""
    lines = out.splitlines()
    return "\n".join("\n".join(lines[i:i + 4]) for i, line in enumerate(lines) if line.startswith("failed "))


def _env():
    import os
    return dict(os.environ)


def test_all_with_no_flags_runs_the_whole_lab_offline_on_three_nodes_with_the_real_charts(lab):
    lab, config = lab
    proc, took = invoke_all(config)
    out = proc.stdout + proc.stderr
    figure(f"invoke all (no flags, offline, three nodes, the real charts), first run: {took:.0f} s")
    assert proc.returncode == 0, failures(out) + "\n...\n" + out[-6000:]
    said = [line for line in out.splitlines() if line.startswith("offline: no container registry answers")]
    assert len(said) == 1, out[:2000]
    assert "failed=0" in out and "OpenFaaS CE refuses to start without internet" in out
    assert "'Hello World') -> 'dlroW olleH'" in " ".join(out.split())
    assert re.search(rf"job finished in [\d.]+s: {DOCS_PAGES} pages, 1 failed", " ".join(out.split())), out[-4000:]

    kube = make_context(lab).kube
    nodes = kube.core.list_node().items
    assert len(nodes) == 3 and all(map(condition_ready, nodes))
    # every node that runs a part's pods holds its images: loaded into each node, not just one
    sh = LocalShell(lab.tools_dir)
    for node in (n.metadata.name for n in nodes):
        for name in ("nginx", "ray"):
            found = sh.run(["docker", "exec", node, "crictl", "inspecti", images.reference(name)], check=False)
            assert found.returncode == 0, f"{images.reference(name)} is not on node {node}"

    pods = kube.core.list_namespaced_pod("default", label_selector="app=nginx").items
    assert len(pods) == 3 and all(map(condition_ready, pods))
    assert len({p.spec.node_name for p in pods}) > 1, [p.spec.node_name for p in pods]
    # all three answer through the NodePort: requests to the control plane's mapped port reach pods on the
    # workers through kube-proxy and kindlab's CNI routes between the nodes
    for _ in range(40):
        with urllib.request.urlopen(nginx.url(lab), timeout=10) as answer:
            assert answer.status == 200
    for pod in pods:
        log = kube.core.read_namespaced_pod_log(pod.metadata.name, "default")
        assert '"GET / HTTP/1.1" 200' in log, f"{pod.metadata.name} on {pod.spec.node_name} answered none of 40"

    ray = kube.core.list_namespaced_pod("ray", label_selector="ray.io/node-type").items
    where = {p.metadata.labels["ray.io/node-type"]: p.spec.node_name for p in ray}
    assert set(where) == {"head", "worker"} and where["head"] != where["worker"], where
    figure(f"nodes: nginx on {sorted(p.spec.node_name for p in pods)}, Ray {where}")

    proc, took = invoke_all(config)
    out = proc.stdout + proc.stderr
    figure(f"invoke all rerun: {took:.0f} s")
    assert proc.returncode == 0, failures(out) + "\n...\n" + out[-6000:]
    recap = re.search(r"ok=\d+\s+changed=(\d+)(?: \((\d+) actions?\))?", out)
    assert recap and recap.group(1) == (recap.group(2) or "0"), out[-4000:]  # only the actions ran again
    # the crawl is a job done once: the rerun says what the kept one found, nothing crawled again
    assert re.search(rf"crawled before with this crawler, site and RayCluster \(job raysubmit_\w+, [^)]*\): "
                     rf"{DOCS_PAGES} pages, 1 failed", " ".join(out.split())), out[-4000:]


def test_compare_measures_the_function_pod_beside_a_ray_task_on_the_lab(lab):
    """`invoke compare` on the real lab: the function's own pod (no gateway offline) and a Ray task on the
    RayCluster, each with a first call, warm calls and a batch of 1,000 with 16 in flight."""
    lab, config = lab
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "invoke", "-f", str(config), "compare", "--calls", "50"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env={**_env(), "COLUMNS": "250"})
    out = proc.stdout + proc.stderr
    figure(f"invoke compare on the three-node lab ({time.monotonic() - start:.0f} s):\n{proc.stdout}")
    assert proc.returncode == 0, out[-4000:]
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
            for line in proc.stdout.splitlines() if line.count("│") >= 6}
    function = next(cells for name, cells in rows.items() if name.startswith("reverse function pod"))
    ray = next(cells for name, cells in rows.items() if name.startswith("Ray task"))
    for cells in (function, ray):  # first, median, p95 in ms, warm calls, batch calls per second
        first, median, p95, warm, rate = cells
        assert float(first) > 0 and 0 < float(median) <= float(p95) and warm == "50" and float(rate) > 0, cells

"""The kind lab on an SSH test host: kind, kubectl and docker run there as its own user (the test host
shares this machine's Docker engine, so kindlab's images are there), the client here through the tunnel,
and nginx fetched over real HTTP through the node port forwarded here."""
import subprocess
import urllib.request
from dataclasses import replace

import pytest
import yaml

from playbooks import cluster, nginx, tools
from playbooks.core.runner import PlayFailed

from .. import sshd
from ..conftest import PlayRun
from .conftest import CHECKOUT, kind_containers


@pytest.fixture(scope="module")
def far_kind(real_lab, ssh_host, tmp_path_factory):
    home = tmp_path_factory.mktemp("kindlab-here")
    lab = replace(real_lab, cluster=f"kindlab-ssh-{CHECKOUT}", host=sshd.ALIAS, ssh_config=str(ssh_host.ssh_config),
                  home=home, kubeconfig=home / "kubeconfig")
    run = PlayRun(lab)
    run(tools.host_steps(lab, ["kind", "kubectl"], "auto"))  # from this machine's cache
    run(cluster.delete_steps(lab))  # a leftover of an interrupted session
    yield lab
    run(cluster.delete_steps(lab))


def test_kind_and_nginx_on_the_host_answer_here_over_the_forwarded_port(far_kind, ssh_host):
    lab, run = far_kind, PlayRun(far_kind)
    try:
        run(cluster.create_steps(lab) + nginx.deploy_steps(lab) + nginx.scale_steps(lab, 3) + nginx.verify_steps(lab))
    except PlayFailed:
        pytest.fail(f"the kind lab through SSH failed:\n{run.output}")
    assert "serves the nginx welcome page (3 replicas) (on kindlab-test-far, forwarded here over SSH)" in run.output
    # the nodes are the host's: made by its user with its kubeconfig and its kind configuration
    sh_here = subprocess.run(["docker", "ps", "--filter", f"label=io.x-k8s.kind.cluster={lab.cluster}",
                              "--format", "{{.Names}}"], capture_output=True, text=True).stdout.split()
    assert sh_here == [f"{lab.cluster}-control-plane"]
    assert (ssh_host.home / f".cache/kindlab/kubeconfigs/kind-{lab.cluster}.yaml").exists()
    assert "Starting session: command for kindlab-far" in ssh_host.log_text()
    config = yaml.safe_load(lab.kubeconfig.read_text())
    assert [c["name"] for c in config["contexts"]] == [f"kind-{lab.cluster}@{sshd.ALIAS}"]

    # a real HTTP request from here, through SSH, to the node port kind maps on the host
    from playbooks.core.cli import make_shell
    sh = make_shell(lab)
    try:
        url = sh.reach(nginx.url(lab))
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.status == 200 and b"nginx" in answer.read()
    finally:
        sh.close()

    again = run(cluster.create_steps(lab))
    assert [o.status for o in again] == ["ok"] * len(again), run.output

    run(cluster.delete_steps(lab))
    assert kind_containers_left(lab) == []


def kind_containers_left(lab):
    from playbooks.core.commands import LocalShell
    return kind_containers(LocalShell(lab.tools_dir), lab.cluster)

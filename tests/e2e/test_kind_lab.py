"""The real thing: kind cluster, nginx scaled to 3, the welcome page at 127.0.0.1:30080, then delete.

Run: KINDLAB_E2E=1 python -m pytest tests/e2e -q   (Docker, internet, `invoke tools.install`)
"""
import urllib.request

import pytest

from playbooks import cluster, nginx, toolchain
from playbooks.core.settings import Lab

from ..conftest import PlayRun


@pytest.fixture(scope="module")
def kind_lab(tmp_path_factory, docker_available):
    home = tmp_path_factory.mktemp("kindlab-e2e")
    lab = Lab(provider="kind", cluster="kindlab-e2e", home=home, kubeconfig=home / "kubeconfig",
              bin_dir=toolchain.default_bin_dir(), ports=(("nginx", 30080), ("http", 8080)), timeout=600)
    run = PlayRun(lab)
    run(cluster.create_steps(lab))
    yield lab
    run(cluster.delete_steps(lab))


def test_nginx_scaled_to_three_answers_at_localhost(kind_lab):
    run = PlayRun(kind_lab)
    run(nginx.deploy_steps(kind_lab) + nginx.scale_steps(kind_lab, 3) + nginx.verify_steps(kind_lab))
    body = urllib.request.urlopen("http://127.0.0.1:30080/", timeout=10).read().decode()
    assert "Welcome to nginx" in body
    again = run(nginx.deploy_steps(kind_lab) + nginx.scale_steps(kind_lab, 3))
    assert [o.status for o in again] == ["ok", "ok"]


def test_create_again_is_unchanged(kind_lab):
    outcomes = PlayRun(kind_lab)(cluster.create_steps(kind_lab))
    assert all(o.status == "ok" for o in outcomes)

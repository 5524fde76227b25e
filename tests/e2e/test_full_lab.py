"""The whole lab on a real kind cluster: `invoke all`, then each part checked for real.

Run: KINDLAB_E2E=1 python -m pytest tests/e2e -q
Needs Docker, internet (images, Helm charts, docs.ray.io) and `invoke tools.install`
(faas-cli included); takes 15-30 minutes and about 8 GiB of memory.
"""
import pytest

from playbooks import parts
from playbooks import faas, lab as lab_play, monitoring, ray, toolchain
from playbooks.core.settings import Lab

from ..conftest import PlayRun


@pytest.fixture(scope="module")
def full_lab(tmp_path_factory, docker_available):
    home = tmp_path_factory.mktemp("kindlab-e2e-full")
    lab = Lab(provider="kind", cluster="kindlab-e2e-full", home=home, kubeconfig=home / "kubeconfig",
              bin_dir=toolchain.default_bin_dir(), timeout=900)
    run = PlayRun(lab)
    outcomes = run(lab_play.all_steps(lab, parts.choose()))
    yield lab, outcomes, run.output
    run(lab_play.down_steps(lab, parts.choose(), delete_cluster=True))


def test_every_step_ran_and_none_was_skipped(full_lab):
    lab, outcomes, output = full_lab
    assert [o.step for o in outcomes if o.status in ("failed", "skipped")
            and "registry" not in o.step] == [], output


def test_the_function_reverses_text(full_lab):
    lab, outcomes, output = full_lab
    detail = {o.step: o.detail for o in outcomes}["invoke reverse"]
    assert "'dlroW olleH'" in detail


def test_prometheus_targets_up_and_grafana_healthy(full_lab):
    lab, _, _ = full_lab
    outcomes = PlayRun(lab)(monitoring.verify_steps(lab))
    assert all(o.status == "ok" for o in outcomes)


def test_the_crawl_found_pages(full_lab):
    lab, outcomes, _ = full_lab
    detail = {o.step: o.detail for o in outcomes}["crawler job on Ray"]
    assert "job finished" in detail and " 0 pages" not in detail


def test_a_rerun_changes_nothing(full_lab):
    lab, _, _ = full_lab
    again = PlayRun(lab)(lab_play.all_steps(lab, parts.choose("nginx,monitoring,faas")))
    assert [o.step for o in again if o.status == "changed" and not o.action] == []

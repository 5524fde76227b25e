"""`invoke all`, `status` and `down` on the kwok testbed, with the fixture charts standing in."""
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from playbooks import parts
from playbooks import lab as lab_play
from playbooks import nginx
from playbooks.core.cli import cluster_lock, make_context

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "tests" / "fixtures" / "charts"
OFFLINE = (("faas", str(CHARTS / "openfaas-stub")), ("kuberay-operator", str(CHARTS / "kuberay-operator-stub")),
           ("monitoring", str(CHARTS / "kps-stub")), ("ray-cluster", str(CHARTS / "ray-cluster-stub")))


@pytest.fixture(scope="module")
def offline_lab(testbed):
    lab = replace(testbed, charts=OFFLINE)
    yield lab
    from tests.conftest import PlayRun
    PlayRun(lab)(lab_play.down_steps(lab, parts.choose(), delete_cluster=False))


def test_all_installs_every_part_or_skips_it_with_its_reason_then_reruns_unchanged(play, offline_lab):
    first = play(lab_play.all_steps(offline_lab, parts.choose()), lab=offline_lab)
    assert not [o for o in first if o.status == "failed"], play.output
    by = {o.step: o for o in first}
    for release in ("monitoring release", "openfaas release", "kuberay-operator release", "raylab release"):
        assert by[release].status == "changed", play.output
    skipped = {o.step: o.detail for o in first if o.status == "skipped"}
    assert "no containers" in skipped["function reverse deployed"]
    assert "no containers" in skipped["invoke reverse"]
    assert "no containers" in skipped["crawler job on Ray"]
    assert "kind clusters" in skipped["local registry"]

    again = play(lab_play.all_steps(offline_lab, parts.choose()), lab=offline_lab)
    assert [o.step for o in again if o.status == "changed" and not o.action] == [], play.output
    assert [o.step for o in again if o.status == "changed"] == ["nginx answers"]  # it verifies every time
    assert "changed=1 (1 action)" in play.output
    assert not [o for o in again if o.status == "failed"]


def test_check_on_a_cluster_not_made_yet_claims_nothing_and_changes_nothing(play, testbed, tmp_path):
    fresh = replace(testbed, cluster=f"{testbed.cluster}-fresh", charts=OFFLINE, home=tmp_path / "home",
                    kubeconfig=tmp_path / "kubeconfig")
    outcomes = play(lab_play.all_steps(fresh, parts.choose()), check_mode=True, lab=fresh)
    claims = {o.step: (o.status, o.detail) for o in outcomes}
    for step, (status, detail) in claims.items():
        honest = (status == "unknown" and detail.startswith("needs ")
                  or status == "changed" and detail.startswith(("would change", "would run"))
                  or status == "skipped" and ("kind" in detail or "no containers" in detail))
        assert honest, f"{step}: {status} {detail}\n{play.output}"
    assert claims["kwok cluster " + fresh.cluster][0] == "changed"
    assert claims["nginx deployment and service"] == ("unknown", f"needs the cluster of context {fresh.context}")
    assert claims["nginx answers"] == ("changed", "would run")
    # nothing was made: no cluster, no files, no context
    listed = subprocess.run([str(testbed.tools_dir / "kwokctl"), "get", "clusters"], capture_output=True,
                            text=True).stdout.split()
    assert fresh.cluster not in listed
    assert not fresh.home.exists() and not fresh.kubeconfig.exists()


def test_status_shows_nodes_releases_and_ready_pods(play, offline_lab):
    play(lab_play.all_steps(offline_lab, parts.choose("nginx,monitoring")), lab=offline_lab)
    ctx = make_context(offline_lab)
    from io import StringIO
    from rich.console import Console
    out = StringIO()
    Console(file=out, width=200).print(lab_play.status_table(offline_lab, ctx.kube, ctx.sh))
    text = out.getvalue()
    assert "release monitoring" in text and "deployed" in text
    assert "pods in monitoring" in text and "nginx endpoints" in text


def test_parts_can_be_chosen_and_unknown_ones_are_refused():
    assert [p.name for p in parts.choose("nginx,ray", "")] == ["nginx", "ray"]
    assert [p.name for p in parts.choose("", "ray,faas")] == ["nginx", "monitoring"]
    from playbooks.core.settings import SettingsError
    with pytest.raises(SettingsError, match="unknown part"):
        parts.choose("grafana", "")


def test_a_second_run_on_the_same_cluster_exits_instead_of_interleaving(testbed):
    env = {**os.environ, "KINDLAB_HOME": str(testbed.home), "KUBECONFIG": str(testbed.kubeconfig),
           "KINDLAB_BIN_DIR": str(testbed.tools_dir)}
    with cluster_lock(testbed):
        proc = subprocess.run([sys.executable, "-m", "invoke", "nginx.deploy", "--provider", "kwok",
                               "--name", testbed.cluster], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=60)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "another kindlab run" in proc.stderr and testbed.context in proc.stderr
    assert not (testbed.home / "locks" / f"{testbed.context}.lock").exists()  # released afterwards


def test_a_stale_lock_from_a_dead_run_is_taken_over(testbed):
    path = testbed.home / "locks" / f"{testbed.context}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(f"{dead.pid}\ninvoke all\n12:00:00\n")
    with cluster_lock(testbed):
        assert str(os.getpid()) in path.read_text()
    assert not path.exists()


def test_down_removes_parts_side_by_side_and_is_idempotent(play, testbed):
    play(nginx.deploy_steps(testbed))
    first = play(lab_play.down_steps(testbed, parts.choose("nginx"), delete_cluster=False))
    assert [o.status for o in first] == ["changed"]
    again = play(lab_play.down_steps(testbed, parts.choose("nginx"), delete_cluster=False))
    assert [o.status for o in again] == ["ok"]
    # no part needs another, so each part's removal starts at once (the needs order: tests/unit/test_parts.py)
    steps = lab_play.down_steps(testbed, parts.choose(), delete_cluster=False)
    firsts = [s for s in steps if s.needs is not None]
    assert len(firsts) == len(parts.REGISTRY) and all(s.needs == () for s in firsts)

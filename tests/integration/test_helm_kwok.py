"""Helm releases on the kwok testbed: install, converge, upgrade, roll back, fail fast."""
import base64
import gzip
import http.server
import itertools
import json
import os
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from playbooks.core.commands import LocalShell
from playbooks.core.helm import Release, helm, release_steps, uninstall_steps
from playbooks.core.runner import PlayFailed

CHARTS = Path(__file__).resolve().parents[1] / "fixtures" / "charts"
DEMO = CHARTS / "demo"
CRD = "widgets.demo.kindlab.dev"
_numbers = itertools.count(1)


@pytest.fixture(autouse=True)
def helm_home(tmp_path_factory, monkeypatch):
    """Helm's config, cache and data in a temporary place: the user's repositories stay untouched."""
    home = tmp_path_factory.mktemp("helm-home")
    for var in ("HELM_CONFIG_HOME", "HELM_CACHE_HOME", "HELM_DATA_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))
    return home


@pytest.fixture
def ns(testbed, kube):
    """A fresh namespace name per test; deleted afterwards (not waited for)."""
    name = f"helm-{next(_numbers)}-{os.getpid() % 1000}"
    yield name
    try:
        kube.core.delete_namespace(name)
    except ApiException:
        pass


def statuses(outcomes):
    return {o.step: o.status for o in outcomes}


def helm_json(lab, *args):
    return json.loads(LocalShell(lab.tools_dir).run(helm(lab, *args, "-o", "json")).stdout or "null")


def demo(ns, **kw):
    return Release("demo", ns, str(DEMO), **kw)


def test_install_rerun_values_and_chart_upgrades_converge(play, testbed, kube, ns, tmp_path):
    rel = demo(ns, values={"replicas": 2, "message": "one"})
    first = statuses(play(release_steps(testbed, rel)))
    assert first == {f"demo namespace {ns}": "changed", "demo release": "changed"}, play.output
    dep = kube.apps.read_namespaced_deployment("demo-demo", ns)
    assert dep.status.ready_replicas == 2
    assert kube.core.read_namespaced_config_map("demo-demo", ns).data == {"message": "one"}

    again = statuses(play(release_steps(testbed, rel)))
    assert set(again.values()) == {"ok"}, play.output  # the Ansible helm module's pain: not here

    # check mode says what would change and changes nothing
    three = replace(rel, values={"replicas": 3, "message": "one"})
    assert statuses(play(release_steps(testbed, three), check_mode=True))["demo release"] == "changed"
    assert "would change: upgrade (values keys replicas)" in play.output
    assert helm_json(testbed, "get", "values", "demo", "-n", ns) == {"replicas": 2, "message": "one"}

    assert statuses(play(release_steps(testbed, three)))["demo release"] == "changed"
    assert "upgrade (values keys replicas)" in play.output
    assert kube.apps.read_namespaced_deployment("demo-demo", ns).status.ready_replicas == 3
    assert set(statuses(play(release_steps(testbed, three))).values()) == {"ok"}, play.output

    newer = tmp_path / "demo"
    shutil.copytree(DEMO, newer)
    meta = yaml.safe_load((newer / "Chart.yaml").read_text())
    (newer / "Chart.yaml").write_text(yaml.safe_dump({**meta, "version": "0.2.0"}))
    upgraded = replace(three, chart=str(newer))
    assert statuses(play(release_steps(testbed, upgraded)))["demo release"] == "changed"
    assert "chart demo-0.1.0 -> demo-0.2.0" in play.output
    assert helm_json(testbed, "list", "-n", ns)[0]["chart"] == "demo-0.2.0"
    assert set(statuses(play(release_steps(testbed, upgraded))).values()) == {"ok"}, play.output

    # values files and inline values together, with a null and a whole float, still converge
    values_file = tmp_path / "values.yaml"
    values_file.write_text("replicas: 1.0\nwidget: {create: true, size: 5}\nmessage: from-file\n")
    mixed = replace(upgraded, values_files=(values_file,), values={"message": "inline", "podLabels": None})
    assert statuses(play(release_steps(testbed, mixed)))["demo release"] == "changed"
    assert kube.core.read_namespaced_config_map("demo-demo", ns).data == {"message": "inline"}
    assert set(statuses(play(release_steps(testbed, mixed))).values()) == {"ok"}, play.output


def test_crds_are_applied_server_side_and_established_before_the_release(play, testbed, kube, ns):
    try:  # start from no CRD, so this run must create it before the chart's Widget
        kube.apiext.delete_custom_resource_definition(CRD)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            kube.apiext.read_custom_resource_definition(CRD)
            time.sleep(0.2)
    except ApiException as exc:
        assert exc.status == 404
    rel = demo(ns, crds_from_chart=True)
    outcomes = statuses(play(release_steps(testbed, rel)))
    assert outcomes["demo CRDs"] == "changed" and outcomes["demo release"] == "changed", play.output
    crd = kube.apiext.read_custom_resource_definition(CRD)
    assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)
    managers = {(m.manager, m.operation) for m in crd.metadata.managed_fields}
    assert ("kindlab", "Apply") in managers  # server-side apply, kindlab's field manager
    assert "kubectl.kubernetes.io/last-applied-configuration" not in (crd.metadata.annotations or {})
    widget = kube.custom.get_namespaced_custom_object("demo.kindlab.dev", "v1", ns, "widgets", "demo")
    assert widget["spec"] == {"size": 3}
    again = statuses(play(release_steps(testbed, rel)))
    assert again["demo CRDs"] == "ok" and again["demo release"] == "ok", play.output


def test_a_failed_upgrade_is_rolled_back_and_says_so(play, testbed, kube, ns):
    play(release_steps(testbed, demo(ns)))
    bad = demo(ns, values={"servicePort": 70000})
    with pytest.raises(PlayFailed):
        play(release_steps(testbed, bad))
    assert "helm upgrade of release demo failed and was rolled back to revision 1" in play.output
    assert "70000" in play.output and "must be between 1 and 65535" in play.output
    current = helm_json(testbed, "list", "-n", ns)[0]
    assert current["status"] == "deployed" and current["revision"] == "3"
    assert helm_json(testbed, "get", "values", "demo", "-n", ns) is None  # revision 1 had no values
    assert kube.core.read_namespaced_service("demo-demo", ns).spec.ports[0].port == 80
    history = helm_json(testbed, "history", "demo", "-n", ns)
    assert [r["status"] for r in history] == ["superseded", "failed", "deployed"]
    assert history[-1]["description"] == "Rollback to 1"


def test_a_failed_first_install_names_helms_error(play, testbed, ns):
    with pytest.raises(PlayFailed):
        play(release_steps(testbed, demo(ns, values={"servicePort": 0})))
    assert "helm could not install release demo in " + ns in play.output
    assert "spec.ports[0].port" in play.output
    # fixed values repair the failed release on the next run
    outcomes = statuses(play(release_steps(testbed, demo(ns))))
    assert outcomes["demo release"] == "changed"
    assert "repair: release demo is failed" in play.output


def test_pods_in_image_pull_back_off_fail_fast_naming_pod_and_reason(play, testbed, ns):
    lab = replace(testbed, timeout=120)
    rel = demo(ns, values={"podLabels": {"kindlab.dev/fault": "ImagePullBackOff"}})
    with pytest.raises(PlayFailed):
        play(release_steps(lab, rel), lab=lab)
    assert "not ready after" not in play.output  # failed on the reason, not by running out the timeout
    assert "release demo: 0/1 pods Ready; demo-demo-" in play.output
    assert "ImagePullBackOff" in play.output and "registry.kindlab.invalid/demo:1.0" in play.output


def _forge_status(kube, ns, name, revision, status):
    """Rewrite the status helm stored for one revision, as an interrupted run would leave it."""
    secret_name = f"sh.helm.release.v1.{name}.v{revision}"
    secret = kube.core.read_namespaced_secret(secret_name, ns)
    release = json.loads(gzip.decompress(base64.b64decode(base64.b64decode(secret.data["release"]))))
    release["info"]["status"] = status
    data = base64.b64encode(base64.b64encode(gzip.compress(json.dumps(release).encode()))).decode()
    kube.core.patch_namespaced_secret(secret_name, ns, {"metadata": {"labels": {"status": status}},
                                                        "data": {"release": data}})


def test_a_release_left_pending_by_an_interrupted_run_is_repaired(play, testbed, kube, ns):
    play(release_steps(testbed, demo(ns)))
    play(release_steps(testbed, demo(ns, values={"message": "two"})))
    # as if kindlab had been killed in the middle of the second upgrade
    _forge_status(kube, ns, "demo", 1, "deployed")
    _forge_status(kube, ns, "demo", 2, "pending-upgrade")
    outcomes = statuses(play(release_steps(testbed, demo(ns, values={"message": "two"}))))
    assert outcomes["demo release"] == "changed", play.output
    assert "repair: release demo is pending-upgrade (revision 2)" in play.output
    history = helm_json(testbed, "history", "demo", "-n", ns)
    assert history[-2]["description"] == "Rollback to 1" and history[-1]["status"] == "deployed"
    assert kube.core.read_namespaced_config_map("demo-demo", ns).data == {"message": "two"}
    assert set(statuses(play(release_steps(testbed, demo(ns, values={"message": "two"})))).values()) == {"ok"}


def test_uninstall_then_namespace_absent(play, testbed, kube, ns):
    rel = demo(ns)
    play(release_steps(testbed, rel))
    outcomes = statuses(play(uninstall_steps(testbed, rel, delete_namespace=True)))
    assert outcomes == {"demo release absent": "changed", f"demo namespace {ns} absent": "changed"}, play.output
    with pytest.raises(ApiException) as gone:
        kube.core.read_namespace(ns)
    assert gone.value.status == 404
    assert set(statuses(play(uninstall_steps(testbed, rel, delete_namespace=True))).values()) == {"ok"}
    # installing again right away recreates the namespace
    assert statuses(play(release_steps(testbed, rel)))["demo release"] == "changed"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def chart_repo(tmp_path):
    """The demo chart packaged and served as a Helm repository on 127.0.0.1 (started, stopped at will)."""
    repo_dir = tmp_path / "repo"
    repo_dir.mkdir()
    from playbooks import toolchain
    shell = LocalShell(toolchain.default_bin_dir())
    shell.run(["helm", "package", str(DEMO), "--destination", str(repo_dir)])
    servers = []

    def serve():
        handler = lambda *a, **kw: _Quiet(*a, directory=str(repo_dir), **kw)  # noqa: E731
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        url = f"http://127.0.0.1:{server.server_address[1]}/charts"
        (repo_dir / "charts").mkdir(exist_ok=True)
        shutil.copy(next(repo_dir.glob("*.tgz")), repo_dir / "charts")
        shell.run(["helm", "repo", "index", str(repo_dir / "charts"), "--url", url])
        return url, server

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_repository_chart_is_added_refreshed_only_when_stale_and_cached(play, testbed, ns, chart_repo, helm_home):
    url, server = chart_repo()
    rel = Release("demo", ns, "kltest/demo", version="0.1.0", repo_name="kltest", repo_url=url,
                  index_max_age=3600)
    outcomes = statuses(play(release_steps(testbed, rel)))
    assert outcomes["demo chart repository kltest"] == "changed" and outcomes["demo release"] == "changed", \
        play.output
    assert helm_json(testbed, "list", "-n", ns)[0]["chart"] == "demo-0.1.0"

    server.shutdown()  # no network from here on: a fresh index and the cached chart suffice
    server.server_close()
    assert set(statuses(play(release_steps(testbed, rel))).values()) == {"ok"}, play.output
    assert set(statuses(play(release_steps(testbed, replace(rel, values={"replicas": 2})))).values()) == \
        {"ok", "changed"}

    index = next(Path(helm_home).rglob("kltest-index.yaml"))
    old = time.time() - 3 * 3600
    os.utime(index, (old, old))
    moved, _ = chart_repo()  # the repository answers again, at another address
    stale = replace(rel, values={"replicas": 2})
    assert statuses(play(release_steps(testbed, stale), check_mode=True))["demo chart repository kltest"] == "changed"
    assert "refresh the index of chart repository kltest (3 h old)" in play.output
    assert statuses(play(release_steps(testbed, replace(stale, repo_url=moved))))[
        "demo chart repository kltest"] == "changed"
    assert f"point chart repository kltest at {moved}" in play.output
    repos = helm_json(testbed, "repo", "list")
    assert [(r["name"], r["url"]) for r in repos] == [("kltest", moved)]


def test_a_local_chart_whose_files_change_under_the_same_version_is_upgraded(play, testbed, kube, ns, tmp_path):
    chart = tmp_path / "demo"
    shutil.copytree(DEMO, chart)
    rel = demo(ns)
    rel = replace(rel, chart=str(chart))
    assert statuses(play(release_steps(testbed, rel)))["demo release"] == "changed"
    assert set(statuses(play(release_steps(testbed, rel))).values()) == {"ok"}, play.output
    # same Chart.yaml version and values, different template: still a different chart
    configmap = chart / "templates" / "configmap.yaml"
    configmap.write_text(configmap.read_text().replace("\ndata:", "\ndata:\n  added: \"yes\"", 1))
    assert statuses(play(release_steps(testbed, rel), check_mode=True))["demo release"] == "changed"
    assert "chart files changed (digest" in play.output
    assert statuses(play(release_steps(testbed, rel)))["demo release"] == "changed"
    assert kube.core.read_namespaced_config_map("demo-demo", ns).data["added"] == "yes"
    assert set(statuses(play(release_steps(testbed, rel))).values()) == {"ok"}, play.output


def test_check_reports_a_deployed_release_whose_pod_cannot_run_as_failed(play, testbed, kube, ns):
    rel = demo(ns)
    play(release_steps(testbed, rel))
    # the pod starts crash-looping behind helm's back: the release is deployed, but does not run
    kube.apps.patch_namespaced_deployment("demo-demo", ns, {"spec": {"template": {"metadata": {
        "labels": {"kindlab.dev/fault": "CrashLoopBackOff"}}}}})
    deadline = time.monotonic() + 60
    while True:
        pods = kube.core.list_namespaced_pod(ns, label_selector="kindlab.dev/fault=CrashLoopBackOff").items
        restarts = [cs.restart_count for p in pods for cs in p.status.container_statuses or []]
        if restarts and max(restarts) >= 3:
            break
        assert time.monotonic() < deadline, "the crash loop did not start"
        time.sleep(0.5)
    with pytest.raises(PlayFailed):
        play(release_steps(testbed, rel), check_mode=True)
    failed = [line for line in play.output.splitlines() if line.startswith("failed")]
    assert failed and "demo release" in failed[0]
    said = " ".join(play.output.split())  # long lines wrap
    assert "CrashLoopBackOff" in said and "the release is deployed but does not run" in said

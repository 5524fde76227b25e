"""Traits of the real charts that broke kindlab, carried by the stand-ins, on the kwok testbed.

Each test here failed on the upstream charts at their pinned versions (issue:
real charts) before its fix: an unquoted `=` in a CRD enum, a pre-install hook
Job, a Service whose pods an operator makes later (EndpointSlice with
`endpoints: null`), custom resources that only an operator turns into pods,
and CRDs of several megabytes re-checked on every run.
"""
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from playbooks import monitoring, ray
from playbooks.core import commands
from playbooks.core.steps import StepFailed

CHARTS = Path(__file__).resolve().parents[1] / "fixtures" / "charts"
BIG_CRDS, BIG_CRD_KB = 4, 1200  # kube-prometheus-stack: 10 CRDs, 4.4 MB in all (helm takes 5 MiB a file)


@pytest.fixture(autouse=True)
def helm_home(tmp_path, monkeypatch):
    for var in ("HELM_CONFIG_HOME", "HELM_CACHE_HOME", "HELM_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))


def statuses(outcomes):
    return {o.step: o.status for o in outcomes}


def big_crd(number: int, kilobytes: int) -> dict:
    """A CRD with about `kilobytes` of schema, as kube-prometheus-stack's, with `=` enums deep inside."""
    properties = {f"field{i:05d}": {"type": "string", "description": f"field {i} " + "x" * 1000,
                                    "enum": ["=", "!=", "=~", "!~"]} for i in range(kilobytes)}
    plural = f"bigthings{number}"
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.stub.kindlab.dev"},
            "spec": {"group": "stub.kindlab.dev", "scope": "Namespaced",
                     "names": {"kind": f"BigThing{number}", "listKind": f"BigThing{number}List", "plural": plural,
                               "singular": f"bigthing{number}"},
                     "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "properties": {"spec": {"type": "object", "properties": properties}}}}}]}}


@pytest.fixture
def kps_big(testbed, tmp_path):
    """The kps stand-in with more CRDs, of several megabytes in all, whose enums list an unquoted `=`."""
    chart = tmp_path / "kps-stub"
    shutil.copytree(CHARTS / "kps-stub", chart)
    total = 0
    for number in range(BIG_CRDS):
        text = yaml.safe_dump(big_crd(number, BIG_CRD_KB), sort_keys=False).replace("- '='", "- =")
        assert re.search(r"\n +- =\n", text)
        (chart / "crds" / f"big{number}.yaml").write_text(text)
        total += len(text)
    assert total > 4_000_000
    rel = monitoring.release(testbed, chart=str(chart))
    yield rel
    from tests.conftest import PlayRun
    PlayRun(testbed)(monitoring.uninstall_steps(testbed, rel))


@pytest.fixture
def commands_run(monkeypatch):
    """Every argv the tools are run with (the real tools still run)."""
    seen = []
    real = commands.LocalShell.run

    def spy(self, argv, **kwargs):
        seen.append([str(a) for a in argv])
        return real(self, argv, **kwargs)

    monkeypatch.setattr(commands.LocalShell, "run", spy)
    return seen


def test_megabytes_of_crds_with_an_equals_enum_install_then_rerun_from_their_mark(play, testbed, kube, kps_big,
                                                                                   commands_run):
    first = statuses(play(monitoring.install_steps(testbed, kps_big)))
    assert first["monitoring CRDs"] == "changed", play.output
    crd = kube.crd("bigthings0.stub.kindlab.dev")
    assert crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "field00000"]["enum"] == ["=", "!=", "=~", "!~"]
    enum = kube.crd("servicemonitors.monitoring.coreos.com")["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"]["spec"]["properties"]["matchType"]["enum"]
    assert enum[0] == "="

    commands_run.clear()
    again = play(monitoring.install_steps(testbed, kps_big))
    assert set(statuses(again).values()) == {"ok"}, play.output
    dry_runs = [argv for argv in commands_run if "--dry-run=server" in argv]
    assert dry_runs == []  # the megabytes were not sent to the API server again


def test_a_changed_crd_text_is_applied_again(play, testbed, kube, kps_big):
    play(monitoring.install_steps(testbed, kps_big))
    chart = Path(kps_big.chart)
    crd = big_crd(0, 10)
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["added"] = {
        "type": "integer"}
    (chart / "crds" / "big0.yaml").write_text(yaml.safe_dump(crd))
    outcomes = statuses(play(monitoring.install_steps(testbed, kps_big)))
    assert outcomes["monitoring CRDs"] == "changed", play.output
    spec = kube.crd("bigthings0.stub.kindlab.dev")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert "added" in spec["properties"]["spec"]["properties"]


def test_helm_waits_for_a_pre_install_hook_job_that_runs_to_completion(play, testbed, kube):
    rel = monitoring.release(testbed, chart=str(CHARTS / "kps-stub"))
    try:
        outcomes = statuses(play(monitoring.install_steps(testbed, rel)))
        assert outcomes["monitoring release"] == "changed", play.output
        assert "helm waits for pre-install,pre-upgrade hook job monitoring/kps-admission-create" \
            in play.output
    finally:
        from tests.conftest import PlayRun
        PlayRun(testbed)(monitoring.uninstall_steps(testbed, rel))


def test_a_hook_job_that_cannot_run_stops_helm_and_is_named(play, testbed, kube):
    rel = replace(monitoring.release(testbed, chart=str(CHARTS / "kps-stub")),
                  values={"hookImage": "missing.kindlab.invalid/certgen:1"})
    try:
        with pytest.raises(Exception):
            play(monitoring.install_steps(testbed, rel))
        failed = next(o for o in play_outcomes(play) if o[0] == "monitoring release")
        assert failed[1] == "failed"
        assert ("pre-install,pre-upgrade hook job monitoring/kps-admission-create cannot complete"
                in play.output), play.output
        assert "ImagePullBackOff" in play.output and "helm was stopped" in play.output
        assert "timed out" not in play.output
    finally:
        from tests.conftest import PlayRun
        PlayRun(testbed)(monitoring.uninstall_steps(testbed, rel))


def play_outcomes(play):
    """(step, status) pairs from the last play's printed lines."""
    pairs = []
    for line in play.output.splitlines():
        parts = line.split()
        if parts and parts[0] in ("ok", "changed", "failed", "skipped"):
            pairs.append((" ".join(parts[1:-1]), parts[0]))
    return pairs


def test_a_service_whose_pods_do_not_exist_yet_has_zero_ready_endpoints(testbed, kube):
    namespace = "traits-endpoints"
    kube.core.create_namespace({"metadata": {"name": namespace}})
    try:
        kube.core.create_namespaced_service(namespace, {
            "metadata": {"name": "later"},
            "spec": {"selector": {"app": "made-by-an-operator-later"}, "ports": [{"port": 9090}]}})
        deadline = time.monotonic() + 30
        while not kube.get_json(f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices").get("items"):
            assert time.monotonic() < deadline, "the controller-manager made no EndpointSlice"
            time.sleep(0.2)
        raw = kube.get_json(f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices")["items"][0]
        assert raw.get("endpoints") is None  # the trait: `endpoints: null`
        with pytest.raises(ValueError, match="endpoints"):  # which the client's models refuse
            client.DiscoveryV1Api(kube.api).list_namespaced_endpoint_slice(namespace)
        assert kube.ready_endpoints(namespace, "later") == 0
    finally:
        kube.core.delete_namespace(namespace)


@pytest.fixture
def ray_lab(testbed):
    lab = replace(testbed, charts=(("kuberay-operator", str(CHARTS / "kuberay-operator-stub")),
                                   ("ray-cluster", str(CHARTS / "ray-cluster-stub"))))
    yield lab
    from tests.conftest import PlayRun
    PlayRun(lab)(ray.uninstall_steps(lab))


def test_ray_pods_are_made_by_the_real_operator_from_the_raycluster(play, ray_lab, kube):
    outcomes = statuses(play(ray.install_steps(ray_lab)))
    assert outcomes["ray head and worker pods Ready"] == "ok", play.output
    pods = kube.core.list_namespaced_pod("ray").items
    owners = {ref.kind for p in pods for ref in p.metadata.owner_references or []}
    assert owners == {"RayCluster"} and len(pods) == 2
    assert {p.metadata.labels["ray.io/node-type"] for p in pods} == {"head", "worker"}
    kube.core.read_namespaced_service("raylab-head-svc", "ray")  # made by the operator too
    state = kube.custom.get_namespaced_custom_object("ray.io", "v1", "ray", "rayclusters", "raylab")["status"]
    assert state  # written by the operator
    assert set(statuses(play(ray.install_steps(ray_lab))).values()) == {"ok"}, play.output


def test_without_the_operator_the_ray_pods_step_is_skipped_with_its_reason(play, ray_lab, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ray_lab.tools_dir.iterdir():
        if tool.name != "ray-operator" and tool.is_file():
            (bin_dir / tool.name).symlink_to(tool)
    lab = replace(ray_lab, bin_dir=bin_dir)
    outcomes = {o.step: o for o in play(ray.install_steps(lab), lab=lab)}
    skipped = outcomes["ray head and worker pods Ready"]
    assert skipped.status == "skipped" and "ray-operator is not installed" in skipped.detail
    assert "invoke tools.install --testbed --only ray-operator" in skipped.detail


def test_a_custom_resource_nobody_reconciles_fails_after_the_grace_naming_the_operator(testbed, kube):
    namespace = "traits-nobody"
    kube.core.create_namespace({"metadata": {"name": namespace}})
    try:
        # a kind no operator serves: its CRD from the demo chart
        crd = yaml.safe_load((CHARTS / "demo" / "crds" / "widgets.yaml").read_text())
        try:
            kube.apiext.create_custom_resource_definition(crd)
        except ApiException as exc:
            if exc.status != 409:
                raise
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        version = crd["spec"]["versions"][0]["name"]
        deadline = time.monotonic() + 30
        while True:
            try:
                kube.custom.create_namespaced_custom_object(group, version, namespace, plural, {
                    "apiVersion": f"{group}/{version}", "kind": crd["spec"]["names"]["kind"],
                    "metadata": {"name": "orphan"}, "spec": {}})
                break
            except ApiException:
                assert time.monotonic() < deadline
                time.sleep(0.5)
        with pytest.raises(StepFailed, match="no status after 2s, so no widget-operator is reconciling it"):
            kube.wait_reconciled(group, version, plural, namespace, operator="widget-operator", timeout=60,
                                 grace=2)
    finally:
        kube.core.delete_namespace(namespace)

"""The stand-in kube-prometheus-stack against the real one (79.9.0): the traits the tests rely on render alike.

Both charts are rendered with `helm template` from the lab's values and offline
mode's (kindlab's images; the source archives at hand, so kube-state-metrics and
the admission webhooks run). What the real-cluster tests run from the stand-in
must be what the real chart would run: the same objects by kind and name, the
same images at the same value keys, the same arguments, users, hooks and
webhooks. Needs helm (`invoke tools.install --testbed`) and the real chart from
the project's shared sources; CI fails without them, elsewhere the test skips.
"""
import subprocess
from pathlib import Path

import pytest
import yaml

from playbooks import images, monitoring, toolchain
from playbooks.core.settings import Lab

from .. import conftest as shared

STUB = Path(__file__).resolve().parents[1] / "fixtures" / "charts" / "kps-stub"
REAL = shared.SHARED_SOURCES / "charts" / f"kube-prometheus-stack-{monitoring.CHART_VERSION}.tgz"


def unavailable(why: str):
    if shared.testbed_required():
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    helm = toolchain.tool_path("helm", toolchain.default_bin_dir())
    if not helm.is_file():
        unavailable(f"helm is not in {helm.parent}: run `invoke tools.install --testbed`")
    if not REAL.is_file():
        unavailable(f"the real chart {REAL.name} is not in {REAL.parent} (the project's shared sources)")
    values = tmp_path_factory.mktemp("values") / "offline.yaml"
    original = images.archive_missing
    images.archive_missing = lambda lab, binary: None  # the archives at hand (their own tests: test_images)
    try:
        values.write_text(yaml.safe_dump(monitoring.offline_values(Lab(offline=True))))
    finally:
        images.archive_missing = original

    def render(chart: Path) -> dict:
        out = subprocess.run([str(helm), "template", monitoring.RELEASE_NAME, str(chart), "-n", monitoring.NAMESPACE,
                              "-f", str(monitoring.VALUES), "-f", str(values)],
                             capture_output=True, text=True, check=True).stdout
        return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}

    return render(STUB), render(REAL)


def container(document: dict) -> dict:
    return document["spec"]["template"]["spec"]["containers"][0]


def pod(document: dict) -> dict:
    return document["spec"]["template"]["spec"]


def test_kube_state_metrics_renders_as_the_real_subchart_renders_it(rendered):
    stub, real = rendered
    name = f"{monitoring.RELEASE_NAME}-kube-state-metrics"
    for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceMonitor"):
        assert (kind, name) in stub and (kind, name) in real, kind
    ours, theirs = container(stub[("Deployment", name)]), container(real[("Deployment", name)])
    assert ours["image"] == theirs["image"] == images.reference("kube-state-metrics")
    assert ours["args"] == theirs["args"]  # --port and every collector, in order
    assert ours.get("command") is None and theirs.get("command") is None  # the image's entrypoint runs
    for probe in ("livenessProbe", "readinessProbe"):
        assert (ours[probe]["httpGet"]["path"], ours[probe]["httpGet"]["port"]) == \
               (theirs[probe]["httpGet"]["path"], theirs[probe]["httpGet"]["port"])
    assert pod(stub[("Deployment", name)])["securityContext"] == pod(real[("Deployment", name)])["securityContext"]
    assert ours["securityContext"] == theirs["securityContext"]
    # what the ServiceMonitor makes Prometheus call the job, and where it scrapes
    for key in ("jobLabel", "endpoints"):
        assert stub[("ServiceMonitor", name)]["spec"][key] == real[("ServiceMonitor", name)]["spec"][key]
    ports = [(p["name"], p["port"]) for p in real[("Service", name)]["spec"]["ports"]]
    assert [(p["name"], p["port"]) for p in stub[("Service", name)]["spec"]["ports"]] == ports
    # its rights: list and watch of what it counts
    granted = {r for rule in stub[("ClusterRole", name)]["rules"] for r in rule["resources"]}
    assert granted == {r for rule in real[("ClusterRole", name)]["rules"] for r in rule["resources"]}


def test_the_admission_webhooks_and_their_certificate_jobs_render_as_the_real_charts(rendered):
    stub, real = rendered
    hooks = [key for key, d in real.items() if "admission" in key[1] and key[0] != "NetworkPolicy"]
    assert {key for key in stub if "admission" in key[1]} == set(hooks)
    for key in hooks:
        ours, theirs = stub[key], real[key]
        hook = "helm.sh/hook", "helm.sh/hook-delete-policy"
        assert [(ours["metadata"].get("annotations") or {}).get(a) for a in hook] == \
               [(theirs["metadata"].get("annotations") or {}).get(a) for a in hook], key
        if key[0] == "Job":
            assert container(ours)["image"] == container(theirs)["image"] == images.reference("kube-webhook-certgen")
            assert container(ours)["args"] == container(theirs)["args"], key
            assert container(ours)["securityContext"] == container(theirs)["securityContext"]
            assert pod(ours)["securityContext"] == pod(theirs)["securityContext"]
            assert pod(ours)["serviceAccountName"] == pod(theirs)["serviceAccountName"]
            assert pod(ours)["restartPolicy"] == pod(theirs)["restartPolicy"]
        if key[0].endswith("WebhookConfiguration"):
            prometheus_rules = [w for w in theirs["webhooks"] if "prometheusrule" in w["name"]]
            assert [(w["name"], w["failurePolicy"], w["clientConfig"]) for w in ours["webhooks"]] == \
                   [(w["name"], w["failurePolicy"], w["clientConfig"]) for w in prometheus_rules]
        if key[0] in ("ClusterRole", "Role"):
            assert ours["rules"] == theirs["rules"]


def test_the_operator_serves_its_webhooks_with_the_jobs_certificate_as_in_the_real_chart(rendered):
    stub, real = rendered
    name = "kps-operator"
    tls = [a for a in container(real[("Deployment", name)])["args"] if a.startswith("--web.")]
    assert [a for a in container(stub[("Deployment", name)])["args"] if a.startswith("--web.")] == tls
    def secrets(deployment):
        return {v["name"]: v["secret"]["secretName"] for v in pod(deployment)["volumes"] if "secret" in v}

    assert secrets(stub[("Deployment", name)]) == secrets(real[("Deployment", name)]) == {"tls-secret": "kps-admission"}

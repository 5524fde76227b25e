"""The monitoring play on the kwok testbed, with a stand-in chart for kube-prometheus-stack.

The real chart's containers could not run on kwok; the stub renders what the
play relies on (Services kps-prometheus and kps-grafana, a Deployment reading
the admin Secret, a Prometheus resource that the real prometheus-operator turns
into a StatefulSet beside the simulated control plane, the CRDs it needs) from
the same values file, so everything but the chart itself is the play's own:
values, secret, CRDs server-side, release, operator-made pods, verify, uninstall.
"""
import base64
import string
import time
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from playbooks import monitoring

STUB = Path(__file__).resolve().parents[1] / "fixtures" / "charts" / "kps-stub"


@pytest.fixture(autouse=True)
def helm_home(tmp_path, monkeypatch):
    for var in ("HELM_CONFIG_HOME", "HELM_CACHE_HOME", "HELM_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))


@pytest.fixture
def stub(testbed):
    rel = monitoring.release(testbed, chart=str(STUB))
    yield rel
    from tests.conftest import PlayRun
    PlayRun(testbed)(monitoring.uninstall_steps(testbed, rel))


def statuses(outcomes):
    return {o.step: o.status for o in outcomes}


def test_install_makes_the_secret_once_and_a_rerun_changes_nothing(play, testbed, kube, stub):
    first = statuses(play(monitoring.install_steps(testbed, stub)))
    assert first["monitoring namespace monitoring"] == "changed"
    assert first["monitoring grafana admin secret"] == "changed"
    assert first["monitoring release"] == "changed", play.output
    assert "monitoring chart repository prometheus-community" not in first  # a local chart needs no repository

    password = monitoring.password(testbed, kube=kube)
    assert len(password) >= 24 and set(password) <= set(string.ascii_letters + string.digits + "-_")
    assert password not in play.output
    secret = kube.core.read_namespaced_secret("grafana-admin", "monitoring")
    assert base64.b64decode(secret.data["admin-user"]) == b"admin"

    # the values file drove the names, ports and the secret reference
    prometheus = kube.core.read_namespaced_service("kps-prometheus", "monitoring")
    grafana = kube.core.read_namespaced_service("kps-grafana", "monitoring")
    assert prometheus.spec.ports[0].port == 9090 and grafana.spec.ports[0].port == 80
    env = kube.apps.read_namespaced_deployment("kps-grafana", "monitoring").spec.template.spec.containers[0].env
    refs = {e.name: (e.value_from.secret_key_ref.name, e.value_from.secret_key_ref.key) for e in env}
    assert refs == {"GF_SECURITY_ADMIN_USER": ("grafana-admin", "admin-user"),
                    "GF_SECURITY_ADMIN_PASSWORD": ("grafana-admin", "admin-password")}
    # the chart's CRDs went in server-side, before the release that needs them
    crd = kube.crd("prometheuses.monitoring.coreos.com")
    assert ("kindlab", "Apply") in {(m["manager"], m["operation"]) for m in crd["metadata"]["managedFields"]}
    assert kube.custom.get_namespaced_custom_object("monitoring.coreos.com", "v1", "monitoring", "prometheuses",
                                                    "kps-prometheus")
    # and the operator made Prometheus from it, after the release: the Service's endpoint is its pod
    statefulset = kube.apps.read_namespaced_stateful_set("prometheus-kps-prometheus", "monitoring")
    assert [ref.kind for ref in statefulset.metadata.owner_references] == ["Prometheus"]

    again = statuses(play(monitoring.install_steps(testbed, stub)))
    assert set(again.values()) == {"ok"}, play.output
    assert monitoring.password(testbed, kube=kube) == password  # never rotated

    verified = statuses(play(monitoring.verify_steps(testbed)))
    assert verified == {"monitoring services have ready endpoints": "changed", "prometheus targets up": "skipped",
                        "grafana healthy": "skipped"}
    assert "kps-prometheus: 1 ready endpoint(s); kps-grafana: 1 ready endpoint(s)" in play.output
    assert "runs no containers" in play.output and "need a real cluster" in play.output


def test_uninstall_removes_release_namespace_and_secret(play, testbed, kube, stub):
    play(monitoring.install_steps(testbed, stub))
    outcomes = statuses(play(monitoring.uninstall_steps(testbed, stub)))
    assert outcomes == {"monitoring release absent": "changed",
                        "monitoring namespace monitoring absent": "changed"}, play.output
    with pytest.raises(ApiException):
        kube.core.read_namespaced_secret("grafana-admin", "monitoring")
    assert set(statuses(play(monitoring.uninstall_steps(testbed, stub))).values()) == {"ok"}
    with pytest.raises(Exception, match="run `invoke monitoring.install` first"):
        monitoring.password(testbed, kube=kube)
    # verify names what is missing instead of failing obscurely
    with pytest.raises(Exception):
        play(monitoring.verify_steps(testbed))
    assert "service monitoring/kps-prometheus not found: run `invoke monitoring.install`" in play.output

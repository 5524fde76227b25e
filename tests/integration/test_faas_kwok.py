"""The faas play on the kwok testbed: what needs no container (install, idempotency by code hash)."""
from dataclasses import replace
from pathlib import Path

import pytest

from playbooks import faas
from playbooks.core.cli import make_context

CHART = Path(__file__).resolve().parents[1] / "fixtures" / "charts" / "openfaas-stub"


@pytest.fixture(scope="module")
def faas_lab(testbed):
    lab = replace(testbed, charts=(("faas", str(CHART)),))
    yield lab
    from tests.conftest import PlayRun
    PlayRun(lab)(faas.uninstall_steps(lab))


def function_deployment(image):
    """The Deployment faas-netes makes for a function (here made by hand: no gateway runs)."""
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "reverse", "namespace": "openfaas-fn", "labels": {"faas_function": "reverse"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"faas_function": "reverse"}},
                     "template": {"metadata": {"labels": {"faas_function": "reverse"}},
                                  "spec": {"containers": [{"name": "reverse", "image": image}]}}}}


def test_install_then_function_state_follows_the_code_hash(play, faas_lab):
    first = play(faas.install_steps(faas_lab), lab=faas_lab)
    by = {o.step: o for o in first}
    assert by["openfaas release"].status == "changed", play.output
    assert by["namespace openfaas-fn"].status == "changed"
    assert all(o.status in ("ok", "skipped") for o in play(faas.install_steps(faas_lab), lab=faas_lab))

    kube = make_context(faas_lab).kube
    user, password = faas.basic_auth(kube)
    assert user == "admin" and len(password) >= 16  # decoded in Python from the chart's Secret

    deploy = [s for s in faas.deploy_steps(faas_lab) if s.name == "function reverse deployed"][0]
    ctx = make_context(faas_lab)
    assert deploy.check(ctx).state == "skipped"  # nothing deployed, and kwok cannot build
    image = faas.function_image(faas_lab, faas.function_hash())
    kube.apps.create_namespaced_deployment("openfaas-fn", function_deployment(image))
    assert deploy.check(ctx).state == "ok"  # unchanged code: no rebuild, no redeploy
    kube.apps.patch_namespaced_deployment("reverse", "openfaas-fn", function_deployment(
        "localhost:5001/reverse:000000000000"))
    result = deploy.check(ctx)
    assert result.state == "skipped" and "needs Docker" in result.detail  # would rebuild on kind

    removed = play(faas.remove_steps(faas_lab), lab=faas_lab)
    assert removed[0].status == "skipped" and "no containers" in removed[0].detail  # no gateway to ask
    kube.apps.delete_namespaced_deployment("reverse", "openfaas-fn")
    assert play(faas.remove_steps(faas_lab), lab=faas_lab)[0].status == "ok"

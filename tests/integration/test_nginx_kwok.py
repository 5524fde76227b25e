"""The nginx play on the kwok testbed."""
import time
from dataclasses import replace

import pytest

from playbooks import nginx
from playbooks.core.runner import PlayFailed


@pytest.fixture
def lab(testbed):
    yield testbed
    from tests.conftest import PlayRun
    PlayRun(testbed)(nginx.delete_steps(testbed))


def statuses(outcomes):
    return [o.status for o in outcomes]


def test_deploy_scale_rerun_scale_to_zero_and_back(play, lab, kube):
    assert statuses(play(nginx.deploy_steps(lab))) == ["changed"]
    dep = kube.apps.read_namespaced_deployment("nginx", "default")
    assert dep.status.ready_replicas == 1 and dep.spec.template.spec.containers[0].image == nginx.image(lab)

    assert statuses(play(nginx.scale_steps(lab, 3))) == ["changed"]
    assert kube.apps.read_namespaced_deployment("nginx", "default").status.ready_replicas == 3

    again = play(nginx.deploy_steps(lab) + nginx.scale_steps(lab, 3) + nginx.verify_steps(lab))
    # deploy does not undo the scale; the verification is an action: it ran
    assert statuses(again) == ["ok", "ok", "changed"], play.output
    assert "3/3 ready endpoints" in play.output and "no HTTP request" in play.output

    assert statuses(play(nginx.scale_steps(lab, 0))) == ["changed"]
    assert not kube.core.list_namespaced_pod("default", label_selector="app=nginx").items or all(
        p.metadata.deletion_timestamp for p in kube.core.list_namespaced_pod("default", label_selector="app=nginx").items)
    assert statuses(play(nginx.scale_steps(lab, 3))) == ["changed"]
    assert kube.apps.read_namespaced_deployment("nginx", "default").status.ready_replicas == 3


def test_verify_counts_endpoints_and_fails_when_they_are_short(play, lab, kube):
    play(nginx.deploy_steps(lab) + nginx.scale_steps(lab, 2))
    assert statuses(play(nginx.verify_steps(lab))) == ["changed"]
    assert "2/2 ready endpoints" in play.output
    # a change behind kindlab's back: three pods, all replaced by ones that take a minute to get Ready
    kube.apps.patch_namespaced_deployment("nginx", "default", {"spec": {
        "replicas": 3, "strategy": {"type": "Recreate", "rollingUpdate": None},
        "template": {"metadata": {"annotations": {"kindlab.dev/ready-delay": "60s"}}}}})
    with pytest.raises(PlayFailed):
        play(nginx.verify_steps(lab))
    assert "ready endpoint(s), want 3" in play.output


def test_a_missing_image_fails_fast_naming_pod_and_reason(play, lab):
    bad = replace(lab, part_settings=(("nginx", (("image", "missing.kindlab.invalid/nginx:0.0"),)),), timeout=120)
    with pytest.raises(PlayFailed):
        play(nginx.deploy_steps(bad), lab=bad)
    assert "not ready after" not in play.output  # failed on the reason, not by running out the timeout
    assert "nginx-" in play.output and "ImagePullBackOff" in play.output
    assert 'missing.kindlab.invalid/nginx:0.0' in play.output

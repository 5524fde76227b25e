"""The ray part offline: kindlab's Ray and KubeRay operator images, the feature gates that operator knows,
the order images are loaded in, and no room kept for parts that cannot run offline."""
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from playbooks import images, ray, toolchain
from playbooks.core.settings import Lab
from playbooks.core.steps import Handoff, StepFailed

STUBS = Path(__file__).resolve().parents[1] / "fixtures" / "charts"
CHARTS = (("kuberay-operator", str(STUBS / "kuberay-operator-stub")), ("ray-cluster", str(STUBS / "ray-cluster-stub")))


def step(steps, name):
    return next(s for s in steps if s.name == name)


def test_offline_the_images_load_just_before_what_runs_them_the_big_one_only_once_ray_fits():
    names = [s.name for s in ray.install_steps(Lab(offline=True, charts=CHARTS))]
    assert names == ["kuberay-operator values for its image", "kuberay-operator image(s) in the kind nodes",
                     "kuberay-operator namespace kuberay", "kuberay-operator release", "ray pods sized to the cluster",
                     "ray image(s) in the kind nodes", "raylab namespace ray", "raylab release",
                     "ray head and worker pods Ready"]
    online = [s.name for s in ray.install_steps(Lab())]
    assert not [n for n in online if "image" in n]


def test_the_operator_gets_kindlabs_image_and_only_the_feature_gates_it_knows():
    lab = Lab(offline=True, charts=CHARTS)
    result = ray.operator_values_step(lab, ray.releases(lab)[0], Handoff("the operator's values")).check(NS())
    plan = result.value  # what the step decides, handed to the operator's release
    assert f"{plan['image']['repository']}:{plan['image']['tag']}" == images.reference("kuberay-operator")
    assert [g["name"] for g in plan["featureGates"]] == [
        "RayClusterStatusConditions", "RayJobDeletionPolicy", "RayMultiHostIndexing", "RayServiceIncrementalUpgrade",
        "RayCronJob"]  # the chart's own list, in its order, less what the operator would exit on
    for newer in ("RayClusterMTLS", "RayClusterNetworkPolicy", "RayClusterHistoryServer"):
        assert newer in result.detail  # named in the output, with the reason
    assert f"the KubeRay operator {toolchain.RAY_OPERATOR_VERSION} kindlab builds does not know them" in result.detail


def test_the_ray_cluster_gets_kindlabs_ray_image_with_its_size():
    lab = Lab(offline=True, charts=CHARTS)
    sized = ray.sizing_step(lab, Handoff("the RayCluster's values"), fixed=ray.image_values(images.reference("ray")))
    kube = NS(core=NS(list_node=lambda: NS(items=[NS(metadata=NS(name="n"), spec=NS(taints=[]),
                                                      status=NS(allocatable={"cpu": "2", "memory": "8Gi"}))]),
                      list_pod_for_all_namespaces=lambda field_selector: NS(items=[]),
                      list_namespace=lambda: NS(items=[])))
    no_release = NS(run=lambda argv, **kwargs: NS(stdout="[]"))  # helm list: no RayCluster release yet
    plan = sized.check(NS(kube=kube, sh=no_release)).value
    assert f"{plan['image']['repository']}:{plan['image']['tag']}" == images.reference("ray")
    assert plan["head"]["resources"]["requests"]["cpu"].endswith("m")


def test_without_the_chart_at_hand_the_gates_cannot_be_read_and_the_step_says_which_setting():
    steps = ray.install_steps(Lab(offline=True))
    with pytest.raises(StepFailed, match="set kindlab.charts.kuberay-operator"):
        step(steps, "kuberay-operator values for its image").check(NS())


def test_offline_nothing_is_kept_for_a_part_that_cannot_run_offline():
    namespaces = NS(items=[NS(metadata=NS(name=n)) for n in ("default", "kube-system")])
    kube = NS(core=NS(list_namespace=lambda: namespaces))
    from playbooks.parts import REGISTRY
    online = ray._reserve(Lab(), kube, REGISTRY.values())
    offline = ray._reserve(Lab(offline=True), kube, REGISTRY.values())
    assert online == (REGISTRY["monitoring"].requests[0] + REGISTRY["faas"].requests[0],
                      REGISTRY["monitoring"].requests[1] + REGISTRY["faas"].requests[1])
    assert offline == REGISTRY["monitoring"].requests  # offline faas runs only its function: it requests nothing

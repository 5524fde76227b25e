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
    steps = ray.install_steps(Lab(offline=True, charts=CHARTS))
    names = [s.name for s in steps]
    assert names == ["kuberay-operator values for its image", "kuberay-operator image(s) in the kind nodes",
                     "kuberay-operator namespace kuberay", "kuberay-operator release", "ray pods sized to the cluster",
                     "ray image(s) in the kind nodes", "raylab namespace ray", "raylab release",
                     "raylab pods on the RayCluster's spec", "python-docs image(s) in the kind nodes",
                     "python-docs site (the crawl's)", "ray head and worker pods Ready"]
    # the crawl's site comes up beside the RayCluster once Ray's namespace is there; the pods' wait (and so
    # the crawl after it) waits for both
    assert step(steps, "python-docs image(s) in the kind nodes").needs == ("raylab namespace ray",)
    assert step(steps, "ray head and worker pods Ready").needs == ("raylab pods on the RayCluster's spec",
                                                                   "python-docs site (the crawl's)")
    online = [s.name for s in ray.install_steps(Lab())]
    assert not [n for n in online if "image" in n or "python-docs" in n]


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


def pods_in(**requested):
    """A cluster whose pods request, per namespace, the given millicores (and as many MiB)."""
    pods = [NS(metadata=NS(namespace=ns), spec=NS(containers=[NS(resources=NS(requests={"cpu": f"{cpu}m",
                                                                                          "memory": f"{cpu}Mi"}))]))
            for ns, cpu in requested.items()]
    return NS(core=NS(list_pod_for_all_namespaces=lambda field_selector: NS(items=pods)))


def test_offline_nothing_is_kept_for_a_part_that_cannot_run_offline():
    from playbooks.parts import REGISTRY
    nothing_yet = pods_in(**{"kube-system": 850})
    others = REGISTRY["nginx"].requests, REGISTRY["monitoring"].requests, REGISTRY["faas"].requests
    assert ray._reserve(Lab(), nothing_yet, REGISTRY.values()) == (sum(r[0] for r in others),
                                                                   sum(r[1] for r in others))
    # offline faas runs only its function: it requests nothing; the crawl's site comes, beside Ray
    site = ray.site_requests()
    assert site == (50, 32)  # manifests/python-docs.yaml
    offline = ray._reserve(Lab(offline=True), nothing_yet, REGISTRY.values())
    assert offline == (others[0][0] + others[1][0] + site[0], others[0][1] + others[1][1] + site[1])


def test_a_part_installing_beside_ray_is_kept_whole_until_its_pods_are_there():
    """Measured with the real charts: monitoring's namespace existed while its release was still making its
    pods, so nothing was kept for it, Ray was sized at 400m each, and the worker stayed Unschedulable."""
    from playbooks.parts import REGISTRY
    nginx, monitoring = REGISTRY["nginx"].requests, REGISTRY["monitoring"].requests
    site = ray.site_requests()
    started = pods_in(default=150, monitoring=50)  # nginx up; monitoring's operator only, so far
    assert ray._reserve(Lab(offline=True), started, REGISTRY.values())[0] == monitoring[0] - 50 + site[0]
    settled = pods_in(default=150, monitoring=monitoring[0] + 30)  # all there, asking more than declared
    assert ray._reserve(Lab(offline=True), settled, REGISTRY.values())[0] == site[0]
    assert nginx[0] == 150


def test_the_crawler_travels_with_the_job_unless_every_ray_pod_runs_this_checkouts_ray_image():
    """kindlab's Ray image has the crawler installed, and its tag hashes the crawler's files: only pods on
    exactly that image run this crawler. KubeRay leaves running pods on their old image after an upgrade."""
    def pods(*refs):  # kubectl's answer: the images of the Ray pods' containers
        asked = []

        def run(argv, check=True):
            asked.append(argv)
            return NS(returncode=0, stdout=" ".join(refs))
        return NS(lab=Lab(provider="kind", offline=True), sh=NS(run=run))

    ours, older = images.reference("ray"), "kindlab.local/ray:2.52.0-000000000000"
    assert ray.crawler_in_pods(pods(ours, ours))
    assert not ray.crawler_in_pods(pods(ours, older))  # a worker left on an older build
    assert not ray.crawler_in_pods(pods("rayproject/ray:2.52.0-py311"))  # upstream's image has no crawler
    assert not ray.crawler_in_pods(pods())


def test_the_crawl_site_beside_the_ray_pods_is_not_taken_for_one_of_them():
    """Offline the site's pod shares Ray's namespace: the head and the site Ready, the worker not there yet,
    is not a RayCluster Ready (the crawl would start on a cluster without its worker)."""
    def ready_pod(**labels):
        return NS(metadata=NS(labels=labels, deletion_timestamp=None),
                  status=NS(conditions=[NS(type="Ready", status="True")]))

    pods = [ready_pod(**{"ray.io/node-type": "head"}), ready_pod(app="python-docs")]

    def list_namespaced_pod(namespace, label_selector=""):
        return NS(items=[p for p in pods if not label_selector or label_selector in p.metadata.labels])

    ready = step(ray.install_steps(Lab(provider="kind", offline=True, charts=CHARTS)), "ray head and worker pods Ready")
    ctx = NS(kube=NS(core=NS(list_namespaced_pod=list_namespaced_pod)), sh=None)  # kind: no operator to look for
    assert ready.check(ctx).state == "unknown"
    pods.append(ready_pod(**{"ray.io/node-type": "worker"}))
    assert ready.check(ctx).state == "ok"
    pods[-1].metadata.deletion_timestamp = "2026-12-07T02:40:00Z"  # deleted to be made again on the new spec
    assert ready.check(ctx).state == "unknown"


def test_ray_pods_left_on_an_older_image_or_size_are_recreated_from_the_rayclusters_spec():
    """KubeRay does not replace running pods when the RayCluster changes: a rebuilt Ray image (a crawler
    edit) or a new size would never reach them, and the crawl would ship the crawler every time."""
    from kubernetes.client import V1Container, V1ObjectMeta, V1Pod, V1PodSpec, V1ResourceRequirements

    size = {"requests": {"cpu": "250m", "memory": "2048Mi"}, "limits": {"memory": "2048Mi"}}
    spec = {"headGroupSpec": {"template": {"spec": {"containers": [{"image": "ray:new", "resources": size}]}}},
            "workerGroupSpecs": [{"groupName": "workergroup",
                                  "template": {"spec": {"containers": [{"image": "ray:new", "resources": size}]}}}]}

    def pod(name, group, image, limits):
        resources = V1ResourceRequirements(requests={"cpu": "250m", "memory": "2Gi"}, limits=limits)
        return V1Pod(metadata=V1ObjectMeta(name=name, labels={"ray.io/group": group, "ray.io/node-type": "x"}),
                     spec=V1PodSpec(containers=[V1Container(name="ray", image=image, resources=resources)]))

    pods = [pod("head", "headgroup", "ray:new", {"memory": "2Gi"}),  # as the spec says, quantities canonical
            pod("worker", "workergroup", "ray:new", {"cpu": "250m", "memory": "2Gi"})]  # an old CPU limit
    deleted = []
    kube = NS(custom=NS(get_namespaced_custom_object=lambda *args: {"spec": spec}),
              core=NS(list_namespaced_pod=lambda namespace, label_selector: NS(items=pods),
                      delete_namespaced_pod=lambda name, namespace: deleted.append(name)))
    on_spec = ray.pods_on_spec_step(Lab(), "raylab")
    assert on_spec.check(NS(kube=kube)).detail == "recreate worker (resources)"
    on_spec.apply(NS(kube=kube))
    assert deleted == ["worker"]
    pods[1] = pod("worker", "workergroup", "ray:old", {"memory": "2Gi"})
    assert on_spec.check(NS(kube=kube)).detail == "recreate worker (image ray:old -> ray:new)"
    pods[1] = pod("worker", "workergroup", "ray:new", {"memory": "2Gi"})
    assert on_spec.check(NS(kube=kube)).state == "ok"

"""The RayCluster is sized to the cluster it lands on: what the nodes have free, less what the lab's
other parts will ask for, split between head and worker, within the values file's size and Ray's floor."""
from types import SimpleNamespace as NS

import pytest

from playbooks import ray
from playbooks.core.quantities import quantity
from playbooks.core.steps import Handoff, StepFailed


@pytest.mark.parametrize("value,unit,expected", [
    ("2", "m", 2000), ("1950m", "m", 1950), ("0.5", "m", 500),
    ("8Gi", "Mi", 8192), ("16384Mi", "Mi", 16384), ("8023512Ki", "Mi", 7835), ("2G", "Mi", 1907), ("0", "Mi", 0),
])
def test_quantities_are_read_as_kubernetes_writes_them(value, unit, expected):
    assert quantity(value, unit) == expected


def node(name, cpu, memory, taints=()):
    return NS(metadata=NS(name=name), spec=NS(taints=[NS(effect=t) for t in taints]),
              status=NS(allocatable={"cpu": cpu, "memory": memory, "pods": "110"}))


def pod(namespace, node_name, cpu, memory):
    container = NS(resources=NS(requests={"cpu": cpu, "memory": memory}))
    return NS(metadata=NS(namespace=namespace), spec=NS(node_name=node_name, containers=[container]))


def fake_kube(nodes, pods):
    core = NS(list_node=lambda: NS(items=nodes),
              list_pod_for_all_namespaces=lambda field_selector: NS(items=pods))
    return NS(core=core)


# A 2-core kind node: the control plane requests 850m, as measured on this project's machines.
KIND_NODE = node("cloud-hw-control-plane", "2", "8Gi")
CONTROL_PLANE = [pod("kube-system", "cloud-hw-control-plane", "850m", "300Mi")]


def test_a_two_core_node_gets_a_ray_cluster_that_fits_beside_the_control_plane():
    sizing = ray.size_cluster(fake_kube([KIND_NODE], CONTROL_PLANE), reserve=(0, 0), ceiling=(1000, 2048))
    assert sizing.fits and (sizing.cpu_m, sizing.memory_mib) == (550, 2048)  # (2000 - 850) / 2, rounded to 50m
    assert sizing.values()["worker"]["resources"]["requests"] == {"cpu": "550m", "memory": "2048Mi"}
    assert "head and worker 550m CPU / 2048Mi each" in sizing.describe()


def test_the_ray_pods_request_cpu_without_a_limit_so_a_jobs_processes_are_not_throttled():
    """Measured on the lab: with CPU limits equal to 350m requests, `import ray` alone took 0.75 s in the
    head pod and a trivial job 12 s. The requests still decide where the pods fit; memory stays limited."""
    from playbooks.core.helm import load_values

    sizing = ray.size_cluster(fake_kube([KIND_NODE], CONTROL_PLANE), reserve=(0, 0), ceiling=(1000, 2048))
    for pod_kind in ("head", "worker"):
        resources = sizing.values()[pod_kind]["resources"]
        assert resources["requests"] == {"cpu": "550m", "memory": "2048Mi"}
        assert resources["limits"] == {"cpu": None, "memory": "2048Mi"}  # null: Helm drops the chart's CPU limit
        values = load_values(ray.CLUSTER)[pod_kind]
        assert values["resources"]["limits"]["cpu"] is None
        assert values["rayStartParams"]["num-cpus"] == "1"  # without a limit Ray would count the node's CPUs


def test_the_ray_pods_own_requests_count_as_free_so_a_rerun_decides_the_same():
    running = CONTROL_PLANE + [pod("ray", "cloud-hw-control-plane", "550m", "2048Mi")] * 2
    again = ray.size_cluster(fake_kube([KIND_NODE], running), reserve=(0, 0), ceiling=(1000, 2048))
    assert (again.cpu_m, again.memory_mib) == (550, 2048)


def test_what_other_parts_will_ask_for_is_kept_and_tainted_nodes_are_left_out():
    tainted = node("master", "64", "256Gi", taints=["NoSchedule"])
    sizing = ray.size_cluster(fake_kube([KIND_NODE, tainted], CONTROL_PLANE), reserve=(450, 800),
                              ceiling=(1000, 2048))
    assert (sizing.cpu_m, sizing.memory_mib) == (350, 2048)


def test_a_node_too_small_for_ray_does_not_fit_and_the_step_says_by_how_much(monkeypatch):
    small = fake_kube([node("tiny", "1", "2Gi")], [pod("kube-system", "tiny", "850m", "300Mi")])
    sizing = ray.size_cluster(small, reserve=(0, 0), ceiling=(1000, 2048))
    assert not sizing.fits and sizing.cpu_m < ray.RAY_FLOOR["cpu_m"]
    monkeypatch.setattr(ray, "_ceiling", lambda: (1000, 2048))
    monkeypatch.setattr(ray, "_reserve", lambda lab, kube, parts: (0, 0))
    with pytest.raises(StepFailed, match=r"does not fit: head and worker would get only 50m CPU / 768Mi each \(free for "
                                         r"Ray: 150m CPU / 1748Mi .*at least 250m CPU / 768Mi"):
        ray.sizing_step(NS(), Handoff("the RayCluster's values")).check(NS(kube=small))


class HelmAnswers:
    """The helm calls the sizing step makes: `list` (is the RayCluster release there) and `get values`."""

    def __init__(self, head_requests=None):
        self.head_requests = head_requests

    def run(self, argv, **kwargs):
        import json
        if "list" in argv:
            return NS(stdout=json.dumps([{"name": "raylab"}] if self.head_requests else []))
        assert "values" in argv
        return NS(stdout=json.dumps({"head": {"resources": {"requests": self.head_requests}}}))


@pytest.mark.parametrize("installed,expected", [
    (None, 550),                                   # first install: the share of what is free
    ({"cpu": "300m", "memory": "2Gi"}, 300),       # installed smaller, still fits: kept, no new pods
    ({"cpu": "800m", "memory": "2Gi"}, 550),       # installed larger than what is free now: resized
    ({"cpu": "100m", "memory": "2Gi"}, 550),       # installed below Ray's floor: resized
])
def test_a_rerun_keeps_the_installed_size_while_it_fits_so_nothing_changes(monkeypatch, installed, expected):
    """Measured on a real kind cluster: parts installed side by side made the first run size Ray at 300m
    and the rerun at 350m, upgrading the release on a converged lab."""
    from playbooks.core.settings import Lab

    monkeypatch.setattr(ray, "_ceiling", lambda: (1000, 2048))
    monkeypatch.setattr(ray, "_reserve", lambda lab, kube, parts: (0, 0))
    outcome = ray.sizing_step(Lab(), Handoff("the RayCluster's values")).check(
        NS(kube=fake_kube([KIND_NODE], CONTROL_PLANE), sh=HelmAnswers(installed)))
    plan = outcome.value
    assert plan["head"]["resources"]["requests"]["cpu"] == f"{expected}m"
    assert ("the installed size, which still fits" in outcome.detail) == (expected == 300)


def test_scaling_nginx_beyond_what_the_nodes_can_schedule_is_warned_about_first():
    from playbooks import nginx
    from playbooks.core.settings import Lab

    pods = CONTROL_PLANE + [pod("default", "cloud-hw-control-plane", "50m", "32Mi")] * 3
    kube = fake_kube([KIND_NODE], pods)
    kube.apps = NS(read_namespaced_deployment=lambda name, ns: NS(spec=NS(replicas=3)))
    assert nginx.room_for(kube, 50) == 20  # (2000m - 850m - 150m) / 50m
    step = nginx.scale_steps(Lab(), 40)[0]
    result = step.check(NS(kube=kube))
    assert result.state == "changed"
    assert "warning: the nodes have room for 20 more nginx pod(s) (50m CPU each), so 17 will stay Pending" \
        in result.detail
    assert "warning" not in nginx.scale_steps(Lab(), 10)[0].check(NS(kube=kube)).detail

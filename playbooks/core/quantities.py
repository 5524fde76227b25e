"""Kubernetes quantities, and what the nodes have free: for sizing (Ray), warnings (nginx.scale) and
the figures of an Unschedulable pod's failure."""
from __future__ import annotations

_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity(value, unit: str) -> int:
    """A Kubernetes quantity in millicores (unit "m") or MiB (unit "Mi")."""
    text = str(value).strip()
    if unit == "m":
        return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)
    for suffix, factor in _UNITS.items():
        if text.endswith(suffix):
            return int(float(text[:-len(suffix)]) * factor) // 2**20
    return int(float(text)) // 2**20


def requests(pod) -> tuple[int, int]:
    """(millicores, MiB) a pod's containers request."""
    cpu = mem = 0
    for container in pod.spec.containers:
        asked = (container.resources.requests or {}) if container.resources else {}
        cpu += quantity(asked.get("cpu", "0"), "m")
        mem += quantity(asked.get("memory", "0"), "Mi")
    return cpu, mem


LIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"  # the pods that hold their requests


def node_free(kube, skip_namespace: str = "") -> list[tuple[str, int, int, int]]:
    """(node, free millicores, free MiB, free pod slots) of each node pods can land on: allocatable
    minus what its pods request (pods in `skip_namespace` counted as free)."""
    pods = kube.core.list_pod_for_all_namespaces(field_selector=LIVE_PODS).items
    free = []
    for node in kube.core.list_node().items:
        if any(t.effect == "NoSchedule" for t in node.spec.taints or []):
            continue
        mine = [p for p in pods if p.spec.node_name == node.metadata.name]
        used = [requests(p) for p in mine if p.metadata.namespace != skip_namespace]
        alloc = node.status.allocatable or {}
        free.append((node.metadata.name, quantity(alloc.get("cpu", "0"), "m") - sum(c for c, _ in used),
                     quantity(alloc.get("memory", "0"), "Mi") - sum(m for _, m in used),
                     int(alloc.get("pods", "0") or 0) - len(mine)))
    return free


__all__ = ["LIVE_PODS", "quantity", "requests", "node_free"]

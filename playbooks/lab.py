"""The whole lab: `invoke all`, `invoke status`, `invoke down`.

`all` strings the plays together as one play: the cluster, then nginx, then
monitoring, faas and ray side by side (nothing orders them), each followed by
its own later steps (the function deployed and invoked, the crawl).
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Callable, Sequence

from rich.table import Table

from . import cluster, faas, images, monitoring, nginx, ray
from .core.cli import console
from .core.settings import Lab, SettingsError
from .core.steps import Step, ok, skip

PARTS = ("nginx", "monitoring", "faas", "ray")
DEFAULT_CRAWL = ["https://docs.ray.io/en/latest/"]


def chain(steps: Sequence[Step], after: str | None) -> list[Step]:
    """The steps in order (each after the one before it), the first only after `after`.

    Only the first gets explicit needs: inside a part, a step that is skipped
    (the local registry on kwok) does not skip the steps after it; a failure does.
    """
    steps = list(steps)
    if not steps:
        return []
    return [replace(steps[0], needs=(after,) if after else ()), *steps[1:]]


def choose_parts(only: str, skip: str) -> list[str]:
    def names(text: str) -> list[str]:
        items = [p.strip() for p in text.split(",") if p.strip()]
        unknown = [p for p in items if p not in PARTS]
        if unknown:
            raise SettingsError(f"unknown part(s) {', '.join(unknown)}: parts are {', '.join(PARTS)}")
        return items

    chosen = names(only) or list(PARTS)
    dropped = names(skip)
    return [p for p in chosen if p not in dropped]


def part_groups(lab: Lab, crawl_args: list[str]) -> dict[str, list[Step]]:
    """Each part's steps in order: install, then what uses it."""
    return {
        "nginx": nginx.deploy_steps(lab) + nginx.scale_steps(lab, lab.replicas) + nginx.verify_steps(lab),
        "monitoring": monitoring.install_steps(lab),
        "faas": faas.install_steps(lab) + faas.deploy_steps(lab) + faas.invoke_steps(lab, "Hello World"),
        "ray": ray.install_steps(lab) + ray.crawl_steps(lab, crawl_args),
    }


def offline_gated(lab: Lab, part: str, steps: list[Step]) -> list[Step]:
    """Offline, a part runs only where its images are built: a gate step decides, and
    skips itself and every step of the part with the reason."""
    blocked: dict[str, str] = {}

    def check_gate(ctx):
        reason = images.offline_blocker(ctx.sh, part)
        if reason:
            blocked["reason"] = reason
            return skip(reason)
        return ok(f"{part}'s images are built")

    def gated(step: Step) -> Step:
        def check(ctx):
            if "reason" in blocked:
                return skip(f"{part} is skipped offline")
            return step.check(ctx)
        return replace(step, check=check)

    return [Step(f"{part} images (offline)", check_gate), *[gated(s) for s in steps]]


def all_steps(lab: Lab, parts: list[str], crawl_args: list[str] | None = None,
              groups: Callable[[Lab, list[str]], dict[str, list[Step]]] = part_groups) -> list[Step]:
    steps = chain(cluster.create_steps(lab), None)
    by_part = groups(lab, crawl_args or ray.crawl_args(DEFAULT_CRAWL, "", 2, 200, 8))
    if lab.offline and lab.provider == "kind":
        by_part = {part: offline_gated(lab, part, part_steps) for part, part_steps in by_part.items()}
    base = steps[-1].name
    if "nginx" in parts:
        steps += chain(by_part["nginx"], base)
        base = steps[-1].name
    for part in ("monitoring", "faas", "ray"):
        if part in parts:
            steps += chain(by_part[part], base)
    return steps


def down_steps(lab: Lab, parts: list[str], delete_cluster: bool) -> list[Step]:
    """Reverse order of `all`; with delete_cluster, the cluster goes too (parts and all)."""
    if delete_cluster:
        return cluster.delete_steps(lab)
    removal = {"ray": ray.uninstall_steps, "faas": faas.uninstall_steps,
               "monitoring": monitoring.uninstall_steps, "nginx": nginx.delete_steps}
    steps: list[Step] = []
    for part in ("ray", "faas", "monitoring", "nginx"):
        if part in parts:
            steps += removal[part](lab)
    return steps


def addresses(lab: Lab, parts: list[str]) -> list[tuple[str, str, str]]:
    rows = []
    if "nginx" in parts:
        rows.append(("nginx", f"http://{lab.listen_address}:{lab.nginx_port}", ""))
    if "monitoring" in parts:
        rows.append(("Grafana", "http://127.0.0.1:3000", "invoke monitoring.dashboards; user admin, "
                                                           "password: invoke monitoring.password"))
        rows.append(("Prometheus", "http://127.0.0.1:9090", "invoke monitoring.dashboards"))
    if "faas" in parts:
        rows.append(("OpenFaaS gateway", faas.gateway_url(lab), "user admin; invoke faas.login"))
    if "ray" in parts:
        rows.append(("Ray dashboard", "http://127.0.0.1:8265", "invoke ray.dashboard"))
    return rows


def print_addresses(lab: Lab, parts: list[str]) -> None:
    table = Table("part", "address", "how", title="the lab", title_justify="left")
    for row in addresses(lab, parts):
        table.add_row(*row)
    if lab.provider == "kwok":
        console.print("[dim]simulated cluster: the objects exist, but no container serves these addresses[/dim]")
    console.print(table)


def status_table(lab: Lab, kube, shell) -> Table:
    """One table for the lab: cluster and nodes, releases, Ready pods, endpoints, function, Ray."""
    table = Table("what", "state", title=f"kindlab status: {lab.context} ({lab.provider})", title_justify="left")
    for what, state in cluster.status_rows(lab, kube):
        table.add_row(what, state)
    releases = {}
    out = shell.run(["helm", "--kubeconfig", str(lab.kubeconfig), "--kube-context", lab.context,
                     "list", "-A", "-o", "json"], check=False).stdout
    for rel in json.loads(out or "[]"):
        releases[rel["name"]] = rel
    for name, rel in sorted(releases.items()):
        table.add_row(f"release {name}", f"{rel['status']}, chart {rel['chart']}, ns {rel['namespace']}")
    for namespace in ("default", "monitoring", "openfaas", "openfaas-fn", "kuberay", "ray"):
        pods = [p for p in kube.core.list_namespaced_pod(namespace).items if p.status.phase != "Succeeded"]
        if pods:
            ready = sum(1 for p in pods if any(c.type == "Ready" and c.status == "True"
                                               for c in p.status.conditions or []))
            table.add_row(f"pods in {namespace}", f"{ready}/{len(pods)} Ready")
    try:
        table.add_row("nginx endpoints", f"{kube.ready_endpoints('default', 'nginx')} ready")
    except Exception:  # noqa: BLE001 - status shows what it can
        pass
    image = faas.deployed_image(kube) if _namespace_exists(kube, "openfaas-fn") else None
    if image:
        dep = kube.apps.read_namespaced_deployment(faas.FUNCTION, faas.FN_NAMESPACE)
        table.add_row("function reverse", f"{dep.status.ready_replicas or 0}/{dep.spec.replicas} Ready, {image}")
    for rc in _ray_clusters(kube):
        state = (rc.get("status") or {}).get("state", "unknown")
        table.add_row(f"RayCluster {rc['metadata']['name']}", state)
    return table


def _namespace_exists(kube, name: str) -> bool:
    return any(ns.metadata.name == name for ns in kube.core.list_namespace().items)


def _ray_clusters(kube) -> list[dict]:
    try:
        return kube.custom.list_cluster_custom_object("ray.io", "v1", "rayclusters")["items"]
    except Exception:  # noqa: BLE001 - no KubeRay CRD installed
        return []

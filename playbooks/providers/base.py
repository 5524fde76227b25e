"""What every cluster provider answers, and the steps kind and kwok share.

A provider is the one object that knows how its clusters are made, reached
and fed images. The parts, `all`, `status`, `down` and `doctor` ask it; they
never ask which provider it is. Its capabilities (`lab.can`: runs_containers,
local_operators, fixed_nodes, creates_clusters) are data, like kind's own
provider flags: a part may ask whether containers run, not who runs them.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..core import kubeconfig
from ..core.part import NodePort, Part
from ..core.portforward import forwarded
from ..core.settings import Lab
from ..core.steps import Step, change, ok, skip, unknown


# Where the nodes pull the function's image from (kind's documented local registry); the host pushes there too.
LOCAL_REGISTRY = "localhost:5001"


@dataclass(frozen=True)
class Finding:
    """One line of `invoke doctor`: a check, ok|warn|fail, what was found, and the fix."""

    check: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


class Provider:
    """The interface; the defaults are those of a cluster that is not kindlab's (nothing to make)."""

    tool = ""  # the command that makes, lists and deletes its clusters (kind, kwokctl)

    def __init__(self, lab: Lab):
        self.lab = lab

    # --- the cluster ---------------------------------------------------------------
    def create_steps(self, parts: Sequence[Part]) -> list[Step]:
        """The cluster made (or found), its context in the user's kubeconfig, its nodes Ready."""
        raise NotImplementedError

    def delete_steps(self) -> list[Step]:
        """The cluster and every file kindlab wrote for it gone (absent is fine)."""
        raise NotImplementedError

    def nodes(self, ctx) -> list[str]:
        """The cluster's node names, as the Kubernetes API lists them."""
        return [n.metadata.name for n in ctx.kube.core.list_node().items]

    # --- what the parts ask -----------------------------------------------------------
    def images_steps(self, what: str, refs: Sequence[str]) -> list[Step]:
        """Steps that put images no registry serves onto the nodes; none where the nodes pull them."""
        return []

    def registry_steps(self) -> list[Step]:
        """A registry the nodes pull the function's image from, at LOCAL_REGISTRY."""
        return [Step("local registry", lambda ctx: skip(
            f"kindlab runs a local registry beside kind clusters only; {self.lab.context} pulls images "
            "from the registries its nodes reach"))]

    def port_mappings(self, parts: Sequence[Part]) -> list[dict]:
        """(listen address, host port, node port) for the parts' node ports, where the host maps them."""
        return []

    @contextlib.contextmanager
    def reached(self, ctx, part: Part, port: NodePort, namespace: str, service: str,
                service_port: int) -> Iterator[str]:
        """A URL base on this machine that reaches a part's Service: here a port-forward to it for as
        long as the block runs (no port of this cluster's nodes is mapped to the host)."""
        with forwarded(ctx, namespace, f"svc/{service}", service_port) as base:
            yield base

    def operator_unavailable(self, tool: str, sh=None) -> str | None:
        """Why no operator of this kind can turn a part's custom resources into pods, or None."""
        return None

    def no_registry(self, sh) -> str | None:
        """Why the images it would pull cannot be pulled here (found out in seconds), or None."""
        return None

    def offline_images_missing(self, sh) -> list[str]:
        """The images kindlab builds that a cluster of its own needs offline, not built yet."""
        return []

    # --- what the machine needs, and what is there -----------------------------------
    def tools(self) -> tuple[str, ...]:
        """The tools its steps run (doctor checks them)."""
        return ("kubectl",)

    def doctor(self, parts: Sequence[Part], sh=None) -> list[Finding]:
        """Its own preflight checks (Docker, ports, the testbed...), each with its fix."""
        return []

    def status_rows(self, kube, parts: Sequence[Part], sh=None) -> list[tuple[str, str]]:
        """(what, state) lines for `cluster.status` and `status` (`sh`: the connection to where it runs)."""
        lab = self.lab
        rows = [("provider", lab.provider), ("context", f"{lab.context} (in {lab.kubeconfig})")]
        if lab.host:
            rows.append(("host", f"{lab.host}: its API server through kindlab's SSH tunnel at {kube.host}"))
        version = kube.api.call_api("/version", "GET", response_type="object", auth_settings=["BearerToken"],
                                    _return_http_data_only=True)
        rows.append(("server version", version.get("gitVersion", "?")))
        from ..core.kube import condition_ready  # the kubernetes client is slow to import: only when used

        for node in kube.core.list_node().items:
            alloc = node.status.allocatable or {}
            rows.append((f"node {node.metadata.name}",
                         f"{'Ready' if condition_ready(node) else 'NotReady'}, kubelet "
                         f"{node.status.node_info.kubelet_version or 'simulated'}, "
                         f"{alloc.get('cpu', '?')} CPU, {alloc.get('memory', '?')}"))
        return rows


# --- the files and steps kind and kwok share ----------------------------------------------
def own_kubeconfig(lab: Lab):
    """A kubeconfig only kind/kwokctl write to, so they never touch the user's current context (on the
    machine where they run: lab.machine; on a host, kubectl and helm read it there)."""
    return lab.machine.home / "kubeconfigs" / f"{lab.host_context}.yaml"


def config_file(lab: Lab) -> Path:
    """The kind or kwokctl configuration kindlab renders for the cluster (here; a host gets it by ctx.sh.put)."""
    return lab.home / lab.provider / (f"{lab.cluster}@{lab.host}.yaml" if lab.host else f"{lab.cluster}.yaml")


def rendered(ctx, lab: Lab, text: str) -> str:
    """The cluster's configuration written here and put where the tool reads it; its path there."""
    path = config_file(lab)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    ctx.sh.mkdir(own_kubeconfig(lab).parent)  # where kind/kwokctl write the cluster's kubeconfig
    return ctx.sh.put(path)


def clusters(ctx, tool: str) -> list[str]:
    """Cluster names `kind get clusters` or `kwokctl get clusters` lists."""
    out = ctx.sh.run([tool, "get", "clusters"]).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def exists_check(lab: Lab, tool: str) -> Callable:
    def check(ctx):
        if lab.cluster in clusters(ctx, tool):
            return ok(f"{lab.provider} cluster {lab.cluster} exists")
        return change(f"create {lab.provider} cluster {lab.cluster}")
    return check


def context_step(lab: Lab, read_source: Callable, require: Callable | None = None) -> Step:
    """Put the cluster's context into the user's kubeconfig without making it current.

    `require(ctx)` raises MissingPrerequisite while the cluster is not there (a dry run).
    """
    def entries(ctx):
        found = kubeconfig.context_entries(read_source(ctx), lab.host_context)
        # on a host: its API server through kindlab's SSH tunnel, under a context that names the host
        return kubeconfig.through_tunnel(lab, ctx.sh, found) if lab.host else found

    def check(ctx):
        if require is not None:
            require(ctx)
        if kubeconfig.has_entries(lab.kubeconfig, entries(ctx)):
            return ok(f"context {lab.context} in {lab.kubeconfig}")
        return change(f"add context {lab.context} to {lab.kubeconfig} (current context unchanged)")

    def apply(ctx):
        kubeconfig.merge(lab.kubeconfig, entries(ctx))
        ctx.reset_kube()

    return Step(f"context {lab.context}", check, apply)


def nodes_ready_step(lab: Lab, want: int, system_pods: bool) -> Step:
    def wait(ctx):
        # A restarted API server answers 403 to everyone until its authorizer is warm:
        # nothing below may read the cluster before /readyz says it is ready.
        ctx.kube.wait_api_ready(timeout=ctx.deadline.left(), say=ctx.say)
        done = ctx.kube.wait_nodes_ready(want, timeout=ctx.deadline.left(), say=ctx.say)
        ctx.kube.wait_service_account(timeout=ctx.deadline.left(), say=ctx.say)
        if system_pods:
            done += "; " + ctx.kube.wait_namespace_ready("kube-system", timeout=ctx.deadline.left(), say=ctx.say)
        return done

    def check(ctx):
        from ..core.kube import condition_ready  # the kubernetes client is slow to import: only when used

        # Just started (a stopped node, a restarted control plane), the API server answers 403
        # to everyone until its authorizer is warm: the wait below waits that out.
        not_ready = ctx.kube.api_not_ready()
        if not_ready:
            return unknown(f"the API server ready ({not_ready})")
        nodes = ctx.kube.core.list_node().items
        ready = [n for n in nodes if condition_ready(n)]
        if len(ready) >= want and len(ready) == len(nodes):
            return ok(f"{len(ready)}/{len(nodes)} nodes Ready")
        return unknown(f"{want} Ready node(s); {len(ready)} of {len(nodes)} are")

    return Step(f"nodes of {lab.context} Ready", check, wait=wait)


def files_absent_step(lab: Lab, paths: Sequence) -> Step:
    """Every file kindlab wrote for the cluster where its commands run (its kubeconfig, operators' files)
    and its configuration rendered here."""
    def left(ctx):
        return [path for path in paths if ctx.sh.exists(path)] + ([config_file(lab)] if config_file(lab).exists()
                                                                   else [])

    def check(ctx):
        found = left(ctx)
        return change(f"remove {', '.join(map(str, found))}") if found else ok(f"no file of {lab.cluster} left")

    def remove(ctx):
        for path in left(ctx):
            if path == config_file(lab):
                path.unlink()
            else:
                ctx.sh.remove(path)

    return Step(f"files of {lab.cluster} absent", check, remove)


def context_absent_step(lab: Lab) -> Step:
    def check(ctx):
        if kubeconfig.has_context(lab.kubeconfig, lab.context):
            return change(f"remove context {lab.context} from {lab.kubeconfig}")
        return ok(f"no context {lab.context}")

    return Step(f"context {lab.context} absent", check,
                lambda ctx: kubeconfig.remove_context(lab.kubeconfig, lab.context) and None)


__all__ = ["LOCAL_REGISTRY", "Provider", "Finding", "own_kubeconfig", "config_file", "rendered", "clusters", "exists_check", "context_step",
           "nodes_ready_step", "files_absent_step", "context_absent_step"]

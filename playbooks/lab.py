"""The whole lab: `invoke all`, `invoke status`, `invoke down`, read from the registry of parts.

`all` strings the parts together as one play: the cluster, then every part
side by side (after the parts it `needs`), each followed by what uses it (the
function deployed and invoked, the crawl). `down` is the same graph reversed:
a part goes once the parts that need it are gone, side by side otherwise.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Sequence

from rich.table import Table

from . import cluster
from .core.part import Part
from .core.settings import Lab, SettingsError
from .core.steps import Handoff, Step, ok, skip
from .parts import REGISTRY, offline_reason


def chain(steps: Sequence[Step], after: tuple[Step, ...]) -> list[Step]:
    """The steps in order (each after the one before it), the first only after `after`.

    Only the first gets explicit needs: inside a part, a step that is skipped
    (the local registry on kwok) does not skip the steps after it; a failure does.
    """
    steps = list(steps)
    if not steps:
        return []
    return [replace(steps[0], needs=tuple(s.name for s in after)), *steps[1:]]


def in_order(parts: Sequence[Part]) -> list[Part]:
    """The parts with each one after the parts it needs (among those chosen)."""
    chosen = {p.name: p for p in parts}
    ordered: list[Part] = []

    def visit(part: Part, path: tuple[str, ...]) -> None:
        if part in ordered:
            return
        if part.name in path:
            raise SettingsError(f"parts need each other in a cycle: {' -> '.join((*path, part.name))}")
        for need in part.needs:
            if need in chosen:
                visit(chosen[need], (*path, part.name))
        ordered.append(part)

    for part in parts:
        visit(part, ())
    return ordered


def gate_name(part: Part) -> str:
    return f"{part.name} images (offline)"


def parts_that_ran(parts: Sequence[Part], outcomes) -> list[Part]:
    """The parts an offline gate did not skip (only their addresses mean something)."""
    skipped = {o.step for o in outcomes if o.status == "skipped"}
    return [part for part in parts if gate_name(part) not in skipped]


def offline_gated(part: Part, steps: list[Step]) -> list[Step]:
    """Offline, a part runs only where what it needs is on this machine (parts.offline_reason): a gate
    step decides, once, and hands its answer to every step of the part, which skip with its reason."""
    blocked: Handoff[str | None] = Handoff(f"whether {part.name} can run offline")

    def check_gate(ctx):
        reason = offline_reason(ctx.sh, part, ctx.lab)
        if reason:
            return skip(reason, value=reason)
        return ok(f"{part.name}'s images are built" + (f"; {part.offline_note}" if part.offline_note else ""))

    def gated(step: Step) -> Step:
        def check(ctx):
            if blocked.decided and blocked.get():
                return skip(f"{part.name} is skipped offline")
            return step.check(ctx)
        return replace(step, check=check)

    return [Step(gate_name(part), check_gate, decides=blocked), *[gated(s) for s in steps]]


def all_steps(lab: Lab, parts: Sequence[Part], registry: Sequence[Part] | None = None) -> list[Step]:
    """The cluster, then every part: installed after the parts it needs, then used.

    `registry`: every part the lab may run (default: the registry's); the cluster maps their node
    ports, and a part that sizes itself (Ray) keeps room for those not installed yet.
    """
    registry = list(REGISTRY.values()) if registry is None else list(registry)
    steps = chain(cluster.create_steps(lab, registry), ())
    ready = steps[-1]
    installed: dict[str, Step] = {}  # part -> its last install step: what a part that needs it waits for
    for part in in_order(parts):
        install, use = list(part.install(lab, registry)), list(part.use(lab, registry))
        part_steps = install + use
        if lab.offline and lab.can.docker_nodes:
            part_steps = offline_gated(part, part_steps)
        after = (ready, *(installed[n] for n in part.needs if n in installed))
        steps += chain(part_steps, after)
        installed[part.name] = steps[len(steps) - len(use) - 1]
    return steps


def down_steps(lab: Lab, parts: Sequence[Part], delete_cluster: bool) -> list[Step]:
    """`all` reversed: a part is removed after the parts that need it; with delete_cluster, the cluster goes."""
    if delete_cluster:
        return cluster.delete_steps(lab)
    removed: dict[str, Step] = {}  # part -> its last removal step
    steps: list[Step] = []
    for part in reversed(in_order(parts)):
        after = tuple(removed[p.name] for p in parts if part.name in p.needs and p.name in removed)
        removal = chain(part.uninstall(lab, parts), after)
        steps += removal
        if removal:
            removed[part.name] = removal[-1]
    return steps


def addresses_table(lab: Lab, parts: Sequence[Part]) -> Table:
    caption = ("simulated cluster: the objects exist, but no container serves these addresses"
               if not lab.can.runs_containers else
               f"these addresses are on {lab.host}: the tasks that use them (nginx.verify, faas.invoke, "
               f"monitoring.dashboards, ray.dashboard) forward them here over SSH; `invoke forward` keeps the "
               "node ports and the API server forwarded here until Ctrl-C" if lab.host else None)
    table = Table("part", "address", "how", title="the lab", title_justify="left", caption=caption)
    for part in parts:
        for row in part.addresses(lab):
            table.add_row(*row)
    return table


def forward(lab: Lab, registry: Sequence[Part], out, stop=None) -> None:
    """A lab on a host brought here until Ctrl-C (or `stop`): its API server through the SSH tunnel (the
    lab's context in your kubeconfig then answers kubectl here) and the node ports kind maps there."""
    import threading

    from . import providers
    from .core.cli import make_shell
    from .core.kubeconfig import tunnel

    if not lab.host:
        raise SettingsError("`forward` brings a lab on a host here: name it with --host (a lab on this machine "
                            "is here already)")
    sh = make_shell(lab)
    try:
        tunnel(lab, sh)
        out(f"context {lab.context}: its API server through SSH (kubectl --context '{lab.context}' works here)")
        for mapping in providers.of(lab).port_mappings(registry):
            url = f"http://{mapping['listenAddress']}:{mapping['hostPort']}"
            out(f"{mapping['what']:<28} {sh.reach(url)}  ({lab.host}'s {url})")
        out("forwarding until Ctrl-C")
        try:
            (stop or threading.Event()).wait()
        except KeyboardInterrupt:
            pass
    finally:
        sh.close()


def status_table(lab: Lab, kube, shell, registry: Sequence[Part] | None = None) -> Table:
    """One table for the lab: cluster and nodes, releases, then each part: Ready pods and its own rows."""
    registry = list(REGISTRY.values()) if registry is None else list(registry)
    table = Table("what", "state", title=f"kindlab status: {lab.context} ({lab.provider})", title_justify="left")
    for what, state in cluster.status_rows(lab, kube, registry, shell):
        table.add_row(what, state)
    out = shell.run(["helm", *lab.cluster_flags("--kube-context"), "list", "-A", "-a", "-o", "json"],
                    check=False).stdout
    for rel in sorted(json.loads(out or "[]"), key=lambda r: r["name"]):
        table.add_row(f"release {rel['name']}", f"{rel['status']}, chart {rel['chart']}, ns {rel['namespace']}")
    from .core.kube import pod_state  # the kubernetes client is slow to import: only when used

    for part in registry:
        for namespace in part.namespaces:
            pods = [pod_state(p) for p in kube.core.list_namespaced_pod(namespace).items
                    if p.status.phase != "Succeeded"]
            if pods:
                waiting = [s.describe() for s in pods if not s.ready]
                table.add_row(f"pods in {namespace}", f"{len(pods) - len(waiting)}/{len(pods)} Ready"
                              + (f" ({'; '.join(waiting[:2])})" if waiting else ""))
        try:
            rows = part.status(lab, kube)
        except Exception as exc:  # noqa: BLE001 - status shows what it can
            rows = [(part.name, f"cannot tell: {type(exc).__name__}: {str(exc)[:120]}")]
        for row in rows:
            table.add_row(*row)
    return table

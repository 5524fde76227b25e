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

from . import cluster, images, sources
from .core.helm import chart_at_hand
from .core.part import Part
from .core.settings import Lab, SettingsError
from .core.steps import Step, ok, skip
from .parts import REGISTRY


def chain(steps: Sequence[Step], after: tuple[str, ...]) -> list[Step]:
    """The steps in order (each after the one before it), the first only after `after`.

    Only the first gets explicit needs: inside a part, a step that is skipped
    (the local registry on kwok) does not skip the steps after it; a failure does.
    """
    steps = list(steps)
    if not steps:
        return []
    return [replace(steps[0], needs=after), *steps[1:]]


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


def offline_blocker(sh, part: Part, lab: Lab | None = None) -> str | None:
    """Why `part` cannot run offline here, or None when its images are built, its charts at hand and its
    source archives where kindlab.sources says."""
    missing = [name for name in part.images if not images.current(sh, name)]
    if missing:
        return (f"offline, {part.name} needs image(s) {', '.join(missing)}, not built yet: "
                f"run `invoke images.build --only {','.join(missing)}`")
    away = {key: r for key, r in (part.releases(lab) if lab is not None else {}).items()
            if chart_at_hand(lab, r) is None}
    if away:
        return (f"offline, {part.name} needs its chart(s) on this machine, and no chart repository is reached: "
                + "; ".join(f"{r.chart} {r.version}: set kindlab.charts.{key} to a copy of it (a chart directory "
                            "or .tgz)" for key, r in away.items()))
    archives = [sources.reason_missing(name, lab.source_folders) for name in part.sources] if lab is not None else []
    if any(archives):
        return f"offline, {part.name} needs its source archives: " + "; ".join(filter(None, archives))
    return None


def gate_name(part: Part) -> str:
    return f"{part.name} images (offline)"


def parts_that_ran(parts: Sequence[Part], outcomes) -> list[Part]:
    """The parts an offline gate did not skip (only their addresses mean something)."""
    skipped = {o.step for o in outcomes if o.status == "skipped"}
    return [part for part in parts if gate_name(part) not in skipped]


def offline_gated(part: Part, steps: list[Step]) -> list[Step]:
    """Offline, a part runs only where its images are built: a gate step decides, and
    skips itself and every step of the part with the reason."""
    blocked: dict[str, str] = {}

    def check_gate(ctx):
        reason = offline_blocker(ctx.sh, part, ctx.lab)
        if reason:
            blocked["reason"] = reason
            return skip(reason)
        return ok(f"{part.name}'s images are built" + (f"; {part.offline_note}" if part.offline_note else ""))

    def gated(step: Step) -> Step:
        def check(ctx):
            if "reason" in blocked:
                return skip(f"{part.name} is skipped offline")
            return step.check(ctx)
        return replace(step, check=check)

    return [Step(gate_name(part), check_gate), *[gated(s) for s in steps]]


def all_steps(lab: Lab, parts: Sequence[Part]) -> list[Step]:
    """The cluster, then every part: installed after the parts it needs, then used."""
    steps = chain(cluster.create_steps(lab), ())
    ready = steps[-1].name
    installed: dict[str, str] = {}  # part -> its last install step: what a part that needs it waits for
    for part in in_order(parts):
        install, use = list(part.install(lab)), list(part.use(lab))
        part_steps = install + use
        if lab.offline and lab.can.docker_nodes:
            part_steps = offline_gated(part, part_steps)
        after = (ready, *(installed[n] for n in part.needs if n in installed))
        steps += chain(part_steps, after)
        installed[part.name] = part_steps[len(part_steps) - len(use) - 1].name
    return steps


def down_steps(lab: Lab, parts: Sequence[Part], delete_cluster: bool) -> list[Step]:
    """`all` reversed: a part is removed after the parts that need it; with delete_cluster, the cluster goes."""
    if delete_cluster:
        return cluster.delete_steps(lab)
    removed: dict[str, str] = {}  # part -> its last removal step
    steps: list[Step] = []
    for part in reversed(in_order(parts)):
        after = tuple(removed[p.name] for p in parts if part.name in p.needs and p.name in removed)
        removal = chain(part.uninstall(lab), after)
        steps += removal
        if removal:
            removed[part.name] = removal[-1].name
    return steps


def addresses_table(lab: Lab, parts: Sequence[Part]) -> Table:
    caption = ("simulated cluster: the objects exist, but no container serves these addresses"
               if not lab.can.runs_containers else None)
    table = Table("part", "address", "how", title="the lab", title_justify="left", caption=caption)
    for part in parts:
        for row in part.addresses(lab):
            table.add_row(*row)
    return table


def status_table(lab: Lab, kube, shell) -> Table:
    """One table for the lab: cluster and nodes, releases, then each part: Ready pods and its own rows."""
    table = Table("what", "state", title=f"kindlab status: {lab.context} ({lab.provider})", title_justify="left")
    for what, state in cluster.status_rows(lab, kube):
        table.add_row(what, state)
    out = shell.run(["helm", "--kubeconfig", str(lab.kubeconfig), "--kube-context", lab.context,
                     "list", "-A", "-a", "-o", "json"], check=False).stdout
    for rel in sorted(json.loads(out or "[]"), key=lambda r: r["name"]):
        table.add_row(f"release {rel['name']}", f"{rel['status']}, chart {rel['chart']}, ns {rel['namespace']}")
    from .core.kube import pod_state  # the kubernetes client is slow to import: only when used

    for part in REGISTRY.values():
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

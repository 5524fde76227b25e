"""The cluster play: what `invoke cluster.create`, `cluster.delete` and `cluster.status` run.

Each is its provider's (playbooks/providers/): kind, kwok or existing. The
cluster maps the node ports of every part the lab may run (the registry's,
unless `parts` names others), since a kind cluster's port mappings are fixed
when it is made. A task that makes the cluster first asks whether a
container registry answers at all: where none does, the lab is made offline.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from . import providers
from .core.part import Part
from .core.settings import Lab
from .core.steps import Step, StepFailed
from .parts import REGISTRY


def offline_without_registry(lab: Lab, sh, say) -> Lab:
    """The lab a cluster is made for. Unless told (--offline, kindlab.offline, a node image of one's own),
    where no container registry answers and kindlab's images are built, offline, said in one line;
    where they are not built either, a StepFailed naming the command that builds them."""
    if lab.offline or lab.node_image:
        return lab
    provider = providers.of(lab)
    reason = provider.no_registry(sh)
    if reason is None:
        return lab
    missing = provider.offline_images_missing(sh)
    if missing:
        raise StepFailed(f"no container registry answers ({reason}), and kindlab's own image(s) "
                         f"{', '.join(missing)} are not built: run `invoke setup`")
    say(f"offline: no container registry answers ({reason}): the lab runs on kindlab's own images "
        "(as with --offline)")
    return replace(lab, offline=True)


def create_steps(lab: Lab, parts: Sequence[Part] | None = None) -> list[Step]:
    return providers.of(lab).create_steps(list(REGISTRY.values()) if parts is None else parts)


def delete_steps(lab: Lab) -> list[Step]:
    return providers.of(lab).delete_steps()


def status_rows(lab: Lab, kube, parts: Sequence[Part] | None = None, sh=None) -> list[tuple[str, str]]:
    return providers.of(lab).status_rows(kube, list(REGISTRY.values()) if parts is None else parts, sh)


__all__ = ["create_steps", "delete_steps", "status_rows", "offline_without_registry"]

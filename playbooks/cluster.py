"""The cluster play: what `invoke cluster.create`, `cluster.delete` and `cluster.status` run.

Each is its provider's (playbooks/providers/): kind, kwok or existing. The
cluster maps the node ports of every part the lab may run (the registry's,
unless `parts` names others), since a kind cluster's port mappings are fixed
when it is made.
"""
from __future__ import annotations

from typing import Sequence

from . import providers
from .core.part import Part
from .core.settings import Lab
from .core.steps import Step
from .parts import REGISTRY


def create_steps(lab: Lab, parts: Sequence[Part] | None = None) -> list[Step]:
    return providers.of(lab).create_steps(list(REGISTRY.values()) if parts is None else parts)


def delete_steps(lab: Lab) -> list[Step]:
    return providers.of(lab).delete_steps()


def status_rows(lab: Lab, kube, parts: Sequence[Part] | None = None) -> list[tuple[str, str]]:
    return providers.of(lab).status_rows(kube, list(REGISTRY.values()) if parts is None else parts)


__all__ = ["create_steps", "delete_steps", "status_rows"]

"""What a part of the lab is, as data: the registry (playbooks/parts.py) holds one each.

`invoke all`, `status`, `down`, `doctor` and the tasks in tasks.py read these
records, so adding a part is one module (its steps and its PART) and one line
in the registry. `needs` orders parts: `all` installs a part after the parts
it needs, side by side with the rest; `down` removes it before them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from .settings import Lab
from .steps import Step

Steps = Callable[[Lab], Sequence[Step]]


def _nothing(lab: Lab) -> list:
    return []


@dataclass(frozen=True)
class Part:
    name: str
    namespaces: tuple[str, ...]        # where its pods run (status counts them)
    install: Steps                     # the `NAME.install` task (task_names[0])
    uninstall: Steps                   # the `NAME.uninstall` task (task_names[1]); absent is fine
    help: tuple[str, str]              # those two tasks' help lines (`invoke --list`)
    use: Steps = _nothing              # what `invoke all` does with it once installed (deploy, verify, crawl)
    needs: tuple[str, ...] = ()        # parts that must be installed first
    addresses: Callable[[Lab], list[tuple[str, str, str]]] = _nothing  # (what, URL, how) once it runs
    status: Callable[[Lab, object], list[tuple[str, str]]] = lambda lab, kube: []  # (what, state) rows
    memory_mib: int = 0                # what it needs on a kind node, roughly (doctor)
    cpus: float = 0.0
    requests: tuple[int, int] = (0, 0)  # what its pods request with kindlab's values: millicores, MiB
    offline_requests: tuple[int, int] | None = None  # the same offline, where it runs less there
    tools: tuple[str, ...] = ("kubectl", "helm")  # the lab tools its steps run (doctor)
    images: tuple[str, ...] = ()       # kindlab's offline images it runs (playbooks/images.py)
    # its Helm releases by their kindlab.charts key (offline, their charts must be at hand)
    releases: Callable[[Lab], dict] = lambda lab: {}
    offline_note: str = ""             # what it leaves out offline, and why (all, NAME.install and doctor say it)
    sources: tuple[str, ...] = ()      # source archives it needs offline (playbooks/sources.py)
    task_names: tuple[str, str] = ("install", "uninstall")
    # doctor, when the cluster exists: (ok|warn|fail, detail, fix) about the part fitting in it
    preflight: Callable[[Lab, object], tuple[str, str, str]] | None = None

    def requested(self, lab: Lab) -> tuple[int, int]:
        """What its pods request in this lab: millicores, MiB."""
        return self.offline_requests if lab.offline and self.offline_requests is not None else self.requests


__all__ = ["Part"]

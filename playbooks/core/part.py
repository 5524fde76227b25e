"""What a part of the lab is, as data: the registry (playbooks/parts.py) holds one each.

A part declares what it needs, and the engine derives the rest from that:
the kind provider maps its node ports to host ports, the settings schema takes
its settings (`kindlab.<part>.<key>`), the offline rule (playbooks/parts.py)
reads its images, charts and source archives, `doctor` its tools, memory and
CPU, `status` its namespaces and rows. `all` installs a part after the parts it
`needs`, side by side with the rest; `down` removes it before them.

Its steps are built from the lab and the registry's parts (`Steps`): a part
that sizes itself to what the others will take (Ray) gets them as an argument.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .settings import Lab, Setting
from .steps import Step

Steps = Callable[[Lab, Sequence["Part"]], Sequence[Step]]


def _nothing(lab: Lab, parts: Sequence["Part"] = ()) -> list:
    return []


@dataclass(frozen=True)
class NodePort:
    """A port the part's Service opens on every node, and the host port the lab maps it to on kind."""

    name: str         # its key in kindlab.ports
    node_port: int
    host_port: int    # the default of kindlab.ports.<name>
    what: str = ""    # for the kind configuration and `cluster.status`


@dataclass(frozen=True)
class Part:
    name: str
    namespaces: tuple[str, ...]        # where its pods run (status counts them)
    install: Steps                     # the `NAME.install` task (task_names[0])
    uninstall: Steps                   # the `NAME.uninstall` task (task_names[1]); absent is fine
    help: tuple[str, str]              # those two tasks' help lines (`invoke --list`)
    use: Steps = _nothing              # what `invoke all` does with it once installed (deploy, verify, crawl)
    needs: tuple[str, ...] = ()        # parts that must be installed first
    addresses: Callable[[Lab], list[tuple[str, str, str]]] = lambda lab: []  # (what, URL, how) once it runs
    status: Callable[[Lab, object], list[tuple[str, str]]] = lambda lab, kube: []  # (what, state) rows
    memory_mib: int = 0                # what it needs on a kind node, roughly (doctor)
    cpus: float = 0.0
    requests: tuple[int, int] = (0, 0)  # what its pods request with kindlab's values: millicores, MiB
    offline_requests: tuple[int, int] | None = None  # the same offline, where it runs less there
    tools: tuple[str, ...] = ("kubectl", "helm")  # the lab tools its steps run (doctor)
    node_ports: tuple[NodePort, ...] = ()  # mapped to the host on kind (kindlab.ports)
    settings: Mapping[str, Setting] = field(default_factory=dict)  # kindlab.<name>.<key>: its own settings
    # Offline (no container registry), what must be on this machine: kindlab's images (playbooks/images.py,
    # by catalog name, or any image reference the local engine must hold), its Helm releases' charts by their
    # kindlab.charts key, and source archives (playbooks/sources.py). The rule: playbooks/parts.py.
    images: tuple[str, ...] = ()
    releases: Callable[[Lab], dict] = lambda lab: {}
    sources: tuple[str, ...] = ()
    offline_note: str = ""             # what it leaves out offline, and why (all, NAME.install and doctor say it)
    task_names: tuple[str, str] = ("install", "uninstall")
    # doctor, when the cluster exists: (ok|warn|fail, detail, fix) about the part fitting in it
    preflight: Callable[[Lab, object], tuple[str, str, str]] | None = None

    def requested(self, lab: Lab) -> tuple[int, int]:
        """What its pods request in this lab: millicores, MiB."""
        return self.offline_requests if lab.offline and self.offline_requests is not None else self.requests

    def setting(self, lab: Lab, key: str) -> Any:
        """Its setting `key` in this lab (kindlab.<name>.<key>), else the default it declares."""
        return lab.part_setting(self.name, key, self.settings[key].default)

    def host_port(self, lab: Lab, name: str) -> int:
        """The host port of its node port `name` in this lab (kindlab.ports.<name>)."""
        port = next(p for p in self.node_ports if p.name == name)
        return lab.host_port(name, port.host_port)


__all__ = ["Part", "NodePort", "Steps"]

"""Preflight checks: what the lab needs from this machine, each problem with its fix.

The provider checks what is its own (Docker and ports for kind, the testbed for kwok); this
module checks what every lab needs: the tools, the parts' offline needs, memory and CPU, and
whether each part fits a cluster that exists already.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from rich.table import Table

from . import providers, toolchain
from .core.part import Part
from .core.settings import Lab
from .parts import REGISTRY, offline_reason
from .providers import Finding

# What the cluster itself needs before any part, roughly: a kind control plane.
CLUSTER_MEMORY_MIB, CLUSTER_CPUS = 2048, 1.0


def _tools(lab: Lab, parts: list[Part]) -> list[Finding]:
    """The tools the cluster and the chosen parts run (a part not chosen needs none of its own)."""
    names = list(providers.of(lab).tools())
    names += [t for p in parts for t in p.tools if t not in names]
    found = []
    for name in names:
        pinned = toolchain.TOOLS[name].version
        have = toolchain.installed_version(name, lab.tools_dir)
        flag = " --testbed" if name in toolchain.TESTBED_TOOLS else ""
        if have == pinned:
            found.append(Finding(f"tool {name}", "ok", have))
        elif have:
            found.append(Finding(f"tool {name}", "fail", f"{have}, kindlab pins {pinned}",
                                 f"invoke tools.install{flag} --only {name}"))
        else:
            found.append(Finding(f"tool {name}", "fail", f"not installed in {lab.tools_dir}",
                                 f"invoke tools.install{flag}"))
    return found


def _offline(lab: Lab, parts: list[Part]) -> list[Finding]:
    """Offline on kind: each part's needs (parts.offline_reason), and what it leaves out and why."""
    if not lab.offline or not lab.can.docker_nodes:
        return []
    from .core.commands import LocalShell

    shell = LocalShell(lab.tools_dir)
    found = []
    for part in parts:
        if part.offline_note:  # what runs differently offline: said, nothing to fix
            found.append(Finding(f"offline {part.name}", "warn", part.offline_note,
                                 f"none needed; with internet, run without --offline for all of {part.name}"))
        reason = offline_reason(shell, part, lab)
        found.append(Finding(f"offline {part.name} needs", "fail" if reason else "ok",
                             reason or "its images, charts and source archives are here",
                             _fix(reason) if reason else ""))
    return found


def _fix(reason: str) -> str:
    """The command or setting a reason names (after its last colon), for the fix column."""
    return reason.rsplit(": ", 1)[-1]


def _memory_mib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return None


def _resources(parts: list[Part]) -> list[Finding]:
    """Memory and CPU for the cluster itself, always, and the chosen parts."""
    need_mib = CLUSTER_MEMORY_MIB + sum(p.memory_mib for p in parts)
    need_cpu = CLUSTER_CPUS + sum(p.cpus for p in parts)
    have_mib, have_cpu = _memory_mib(), os.cpu_count() or 1
    biggest = max(parts, key=lambda p: p.memory_mib).name if parts else ""
    found = []
    if have_mib is None:
        found.append(Finding("memory", "warn", "could not read total memory", ""))
    else:
        status = "ok" if have_mib >= need_mib else "fail"
        found.append(Finding("memory", status, f"{have_mib} MiB, the parts need about {need_mib} MiB",
                             "" if status == "ok" else "free memory or leave parts out"
                             + (f": invoke all --skip {biggest}" if biggest else "")))
    status = "ok" if have_cpu >= need_cpu else "warn"
    found.append(Finding("cpu", status, f"{have_cpu} cores, the parts want about {need_cpu:g}",
                         "" if status == "ok" else "expect slow starts; leave parts out with --skip"))
    return found


def _in_the_cluster(lab: Lab, parts: list[Part], registry: Sequence[Part]) -> list[Finding]:
    """Where the lab's cluster exists already: whether each part fits in it (a RayCluster's size)."""
    from .core import kubeconfig

    checks = [p for p in parts if p.preflight]
    if not checks or not kubeconfig.has_context(lab.kubeconfig, lab.context):
        return []
    from .core.kube import Kube  # the kubernetes client is slow to import: only when needed
    try:
        kube = Kube(lab.kubeconfig, lab.context)
        return [Finding(f"{p.name} in {lab.context}", *p.preflight(lab, kube, registry)) for p in checks]
    except Exception as exc:  # noqa: BLE001 - the cluster may be stopped: say so, do not stop the doctor
        return [Finding(f"cluster {lab.context}", "warn", f"cannot be read ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:120]})", "invoke cluster.create starts it again")]


def findings(lab: Lab, parts: list[Part], registry: Sequence[Part] | None = None) -> list[Finding]:
    """Every check for the chosen parts; `registry`: every part the lab may run (the cluster maps their
    node ports; Ray keeps room for them)."""
    registry = list(REGISTRY.values()) if registry is None else list(registry)
    return [*_tools(lab, parts), *providers.of(lab).doctor(registry), *_offline(lab, parts), *_resources(parts),
            *_in_the_cluster(lab, parts, registry)]


def table(lab: Lab, results: list[Finding]) -> Table:
    table = Table("check", "", "detail", "fix", title=f"kindlab doctor (provider {lab.provider})")
    marks = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[bold red]FAIL[/bold red]"}
    for f in results:
        table.add_row(f.check, marks[f.status], f.detail, f.fix)
    return table

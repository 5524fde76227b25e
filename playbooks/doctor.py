"""Preflight checks: what the lab needs from the machine it runs on (this one, or `--host`'s: through the
connection `sh`), each problem with its fix.

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


def _tools(lab: Lab, parts: list[Part], sh) -> list[Finding]:
    """The tools the cluster and the chosen parts run (a part not chosen needs none of its own)."""
    names = list(providers.of(lab).tools())
    names += [t for p in parts for t in p.tools if t not in names]
    if lab.host:
        return _host_tools(lab, names, sh)
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


def _host_tools(lab: Lab, names: list[str], sh) -> list[Finding]:
    """On a host: each tool as this machine's pinned copy (what `setup --host` copies there)."""
    import hashlib

    there = {name: str(lab.machine.bin_dir / toolchain.tool_path(name, lab.tools_dir).name) for name in names}
    sums = dict(reversed(line.split()[:2]) for line in sh.run(["sha256sum", *map(sh.far, there.values())],
                                                               check=False).stdout.splitlines() if line.strip())
    found = []
    for name, path in there.items():
        local = toolchain.tool_path(name, lab.tools_dir)
        want = hashlib.sha256(local.read_bytes()).hexdigest() if local.is_file() else None
        if want and sums.get(sh.far(path)) == want:
            found.append(Finding(f"tool {name}", "ok", f"{toolchain.TOOLS[name].version} on {lab.host}"))
        else:
            found.append(Finding(f"tool {name}", "fail", f"not in {lab.host}'s tool cache at the pinned version",
                                 f"invoke setup --host {lab.host}"))
    return found


def _offline(lab: Lab, parts: list[Part], shell) -> list[Finding]:
    """Offline on kind: each part's needs (parts.offline_reason), and what it leaves out and why."""
    if not lab.offline or not lab.can.docker_nodes:
        return []
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


def _memory_mib(sh) -> int | None:
    for line in (sh.read_text("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    if sh.host:
        return None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return None


def _resources(parts: list[Part], sh) -> list[Finding]:
    """Memory and CPU for the cluster itself, always, and the chosen parts."""
    need_mib = CLUSTER_MEMORY_MIB + sum(p.memory_mib for p in parts)
    need_cpu = CLUSTER_CPUS + sum(p.cpus for p in parts)
    have_mib = _memory_mib(sh)
    have_cpu = int(sh.run(["nproc"], check=False).stdout.strip() or 1) if sh.host else os.cpu_count() or 1
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


def _in_the_cluster(lab: Lab, parts: list[Part], registry: Sequence[Part], sh) -> list[Finding]:
    """Where the lab's cluster exists already: whether each part fits in it (a RayCluster's size)."""
    from .core import kubeconfig

    checks = [p for p in parts if p.preflight]
    if not checks or not kubeconfig.has_context(lab.kubeconfig, lab.context):
        return []
    from .core.kube import Kube  # the kubernetes client is slow to import: only when needed
    try:
        if lab.host:  # the client here, through the tunnel to the host's API server
            kubeconfig.tunnel(lab, sh)
        kube = Kube(lab.kubeconfig, lab.context)
        return [Finding(f"{p.name} in {lab.context}", *p.preflight(lab, kube, registry)) for p in checks]
    except Exception as exc:  # noqa: BLE001 - the cluster may be stopped: say so, do not stop the doctor
        return [Finding(f"cluster {lab.context}", "warn", f"cannot be read ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:120]})", "invoke cluster.create starts it again")]


def findings(lab: Lab, parts: list[Part], registry: Sequence[Part] | None = None, sh=None) -> list[Finding]:
    """Every check for the chosen parts; `registry`: every part the lab may run (the cluster maps their
    node ports; Ray keeps room for them); `sh`: the connection to where the lab runs (default here)."""
    from .core.commands import LocalShell

    sh = sh or LocalShell(lab.tools_dir)
    registry = list(REGISTRY.values()) if registry is None else list(registry)
    return [*_tools(lab, parts, sh), *providers.of(lab).doctor(registry, sh), *_offline(lab, parts, sh),
            *_resources(parts, sh), *_in_the_cluster(lab, parts, registry, sh)]


def table(lab: Lab, results: list[Finding]) -> Table:
    on = f", on {lab.host}" if lab.host else ""
    table = Table("check", "", "detail", "fix", title=f"kindlab doctor (provider {lab.provider}{on})")
    marks = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[bold red]FAIL[/bold red]"}
    for f in results:
        table.add_row(f.check, marks[f.status], f.detail, f.fix)
    return table

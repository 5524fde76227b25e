"""Preflight checks: what the lab needs from this machine, each problem with its fix."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from . import engine, images, sources, toolchain
from .cluster import CLUSTER_CPUS, CLUSTER_IMAGES, CLUSTER_MEMORY_MIB, render_kind_config
from .core.commands import CommandError, LocalShell
from .core.part import Part
from .core.portforward import port_free
from .core.settings import Lab
# kind's known issue "too many open files": its documented minimums.
INOTIFY = {"max_user_watches": 524288, "max_user_instances": 512}


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def _tools(lab: Lab, parts: list[Part]) -> list[Finding]:
    """The tools the cluster and the chosen parts run (a part not chosen needs none of its own)."""
    names = ["kind"] if lab.can.docker_nodes else []
    names += [t for p in parts for t in p.tools if t not in names]
    if not lab.can.runs_containers:  # the simulated cluster: its control plane and operators
        names += [t for t in toolchain.TESTBED_TOOLS if t not in names]
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


def _docker(lab: Lab) -> Finding:
    if not lab.can.docker_nodes:
        return Finding("docker", "ok", f"not needed with provider {lab.provider}")
    shell = LocalShell(lab.tools_dir)
    if shell.which("docker") is None:
        return Finding("docker", "fail", "docker CLI not found", "install Docker (Desktop or Engine)")
    try:
        shell.run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=20)
    except CommandError as exc:
        return Finding("docker", "fail", f"daemon not reachable: {exc.output.strip()[-160:]}",
                       "start Docker (Desktop: open it; Linux: `sudo systemctl start docker`), "
                       "or rehearse without it: --provider kwok")
    return Finding("docker", "ok", "daemon reachable")


def _privileged(lab: Lab, docker: Finding) -> list[Finding]:
    """Every kind node is a --privileged container: try one (with a local image, nothing is pulled)."""
    if not lab.can.docker_nodes or docker.status != "ok":
        return []
    problem = engine.privileged_problem(LocalShell(lab.tools_dir))
    if problem:
        return [Finding("docker --privileged", problem[0], problem[1], engine.CAPS_FIX)]
    return [Finding("docker --privileged", "ok", "privileged containers start")]


def _offline_images(lab: Lab, parts: list[Part], docker: Finding) -> list[Finding]:
    if not lab.offline or not lab.can.docker_nodes or docker.status != "ok":
        return []
    shell = LocalShell(lab.tools_dir)
    found = []
    for part in parts:
        if part.offline_note:  # what runs differently offline: said, nothing to fix
            found.append(Finding(f"offline {part.name}", "warn", part.offline_note,
                                 f"none needed; with internet, run without --offline for all of {part.name}"))
        for archive in part.sources:
            missing = sources.reason_missing(archive, lab.source_folders)
            found.append(Finding(f"source {archive}", "fail" if missing else "ok",
                                 missing or sources.ARCHIVES[archive].file + " (sha256 checked)",
                                 "set kindlab.sources in invoke.yaml" if missing else ""))
    for owner, needed in (("cluster", CLUSTER_IMAGES), *((p.name, p.images) for p in parts)):
        for name in needed:
            built = images.current(shell, name)
            found.append(Finding(f"image {name}", "ok" if built else "fail",
                                 images.reference(name) + ("" if built else " not built"),
                                 "" if built else f"invoke images.build --only {name}"))
    return found


def _ports(lab: Lab) -> list[Finding]:
    if not lab.can.docker_nodes:
        return []
    found = []
    for m in render_kind_config(lab)["nodes"][0]["extraPortMappings"]:
        where = f"{m['listenAddress']}:{m['hostPort']}"
        if not port_free(m["hostPort"], m["listenAddress"]):
            found.append(Finding(f"port {where}", "warn",
                                 "in use (fine if it is this lab's cluster)",
                                 "stop what listens there, or change kindlab.ports in invoke.yaml"))
        else:
            found.append(Finding(f"port {where}", "ok", "free"))
    return found


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


def _inotify(lab: Lab) -> list[Finding]:
    if not sys.platform.startswith("linux") or not lab.can.docker_nodes:
        return []
    found = []
    for key, minimum in INOTIFY.items():
        try:
            value = int(Path(f"/proc/sys/fs/inotify/{key}").read_text())
        except (OSError, ValueError):
            continue
        status = "ok" if value >= minimum else "fail"
        found.append(Finding(f"inotify {key}", status, f"{value} (kind wants >= {minimum})",
                             "" if status == "ok" else f"sudo sysctl fs.inotify.{key}={minimum}"))
    return found


def _in_the_cluster(lab: Lab, parts: list[Part]) -> list[Finding]:
    """Where the lab's cluster exists already: whether each part fits in it (a RayCluster's size)."""
    from .core import kubeconfig

    checks = [p for p in parts if p.preflight]
    if not checks or not kubeconfig.has_context(lab.kubeconfig, lab.context):
        return []
    from .core.kube import Kube  # the kubernetes client is slow to import: only when needed
    try:
        kube = Kube(lab.kubeconfig, lab.context)
        return [Finding(f"{p.name} in {lab.context}", *p.preflight(lab, kube)) for p in checks]
    except Exception as exc:  # noqa: BLE001 - the cluster may be stopped: say so, do not stop the doctor
        return [Finding(f"cluster {lab.context}", "warn", f"cannot be read ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:120]})", "invoke cluster.create starts it again")]


def findings(lab: Lab, parts: list[Part]) -> list[Finding]:
    docker = _docker(lab)
    return [*_tools(lab, parts), docker, *_privileged(lab, docker), *_offline_images(lab, parts, docker),
            *_ports(lab), *_resources(parts), *_inotify(lab), *_in_the_cluster(lab, parts)]


def table(lab: Lab, results: list[Finding]) -> Table:
    table = Table("check", "", "detail", "fix", title=f"kindlab doctor (provider {lab.provider})")
    marks = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[bold red]FAIL[/bold red]"}
    for f in results:
        table.add_row(f.check, marks[f.status], f.detail, f.fix)
    return table

"""Preflight checks: what the lab needs from this machine, each problem with its fix."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from invoke.exceptions import Exit
from rich.table import Table

from . import engine, images, toolchain
from .cluster import render_kind_config
from .core.portforward import port_free
from .core.cli import console
from .core.commands import CommandError, LocalShell
from .core.settings import Lab

PARTS = ("cluster", "nginx", "monitoring", "faas", "ray")
# Rough memory each part needs on a kind node, from the charts' requests plus headroom.
MEMORY_MIB = {"cluster": 2048, "nginx": 128, "monitoring": 2048, "faas": 768, "ray": 3072}
CPUS = {"cluster": 1, "nginx": 0, "monitoring": 1, "faas": 0.5, "ray": 1.5}
# kind's known issue "too many open files": its documented minimums.
INOTIFY = {"max_user_watches": 524288, "max_user_instances": 512}


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def _tools(lab: Lab) -> list[Finding]:
    names = list(toolchain.LAB_TOOLS)
    if lab.provider == "kwok":
        names += list(toolchain.TESTBED_TOOLS)
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
    if lab.provider != "kind":
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
    if lab.provider != "kind" or docker.status != "ok":
        return []
    problem = engine.privileged_problem(LocalShell(lab.tools_dir))
    if problem:
        return [Finding("docker --privileged", problem[0], problem[1], engine.CAPS_FIX)]
    return [Finding("docker --privileged", "ok", "privileged containers start")]


def _offline_images(lab: Lab, parts: list[str], docker: Finding) -> list[Finding]:
    if not lab.offline or lab.provider != "kind" or docker.status != "ok":
        return []
    shell = LocalShell(lab.tools_dir)
    found = []
    for part in parts:
        if part in images.CANNOT_BUILD:
            found.append(Finding(f"offline {part}", "warn", images.CANNOT_BUILD[part],
                                 f"leave it out offline: invoke all --offline --skip {part}"))
            continue
        for name in images.PART_IMAGES.get(part, ()):
            built = images.current(shell, name)
            found.append(Finding(f"image {name}", "ok" if built else "fail",
                                 images.reference(name) + ("" if built else " not built"),
                                 "" if built else f"invoke images.build --only {name}"))
    return found


def _ports(lab: Lab) -> list[Finding]:
    if lab.provider != "kind":
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


def _resources(parts: list[str]) -> list[Finding]:
    need_mib = sum(MEMORY_MIB[p] for p in parts)
    need_cpu = sum(CPUS[p] for p in parts)
    have_mib, have_cpu = _memory_mib(), os.cpu_count() or 1
    found = []
    if have_mib is None:
        found.append(Finding("memory", "warn", "could not read total memory", ""))
    else:
        status = "ok" if have_mib >= need_mib else "fail"
        found.append(Finding("memory", status, f"{have_mib} MiB, the parts need about {need_mib} MiB",
                             "" if status == "ok" else f"free memory or leave parts out: "
                             f"invoke all --skip {'ray' if 'ray' in parts else parts[-1]}"))
    status = "ok" if have_cpu >= need_cpu else "warn"
    found.append(Finding("cpu", status, f"{have_cpu} cores, the parts want about {need_cpu:g}",
                         "" if status == "ok" else "expect slow starts; leave parts out with --skip"))
    return found


def _inotify(lab: Lab) -> list[Finding]:
    if not sys.platform.startswith("linux") or lab.provider != "kind":
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


def findings(lab: Lab, parts: list[str]) -> list[Finding]:
    docker = _docker(lab)
    return [*_tools(lab), docker, *_privileged(lab, docker), *_offline_images(lab, parts, docker), *_ports(lab),
            *_resources(parts), *_inotify(lab)]


def run(lab: Lab, parts_flag: str) -> None:
    parts = [p.strip() for p in parts_flag.split(",") if p.strip()] or list(PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise Exit(f"error: unknown part(s) {', '.join(unknown)}; parts: {', '.join(PARTS)}", code=2)
    results = findings(lab, parts)
    table = Table("check", "", "detail", "fix", title=f"kindlab doctor (provider {lab.provider})")
    marks = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[bold red]FAIL[/bold red]"}
    for f in results:
        table.add_row(f.check, marks[f.status], f.detail, f.fix)
    console.print(table)
    failed = [f for f in results if f.status == "fail"]
    if failed:
        raise Exit(f"doctor: {len(failed)} blocking problem(s): " +
                   "; ".join(f"{f.check}: {f.fix}" for f in failed), code=1)
    console.print("[green]doctor: ready[/green]")

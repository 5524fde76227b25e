"""tests/kind: a real kind cluster made from kindlab's own images, as an offline user makes it.

These run wherever a Docker engine answers and `invoke images.build` has made
the offline images. In CI (`CI` set, or KINDLAB_REQUIRE_REAL=1) a missing
engine or image fails the run; elsewhere the tests skip, naming the command
that fixes it. One cluster serves a whole module. Its host ports are free ones
picked at the start: a lab the user (or an earlier session) left running, which
Docker restarts with its engine, holds the default ports.
"""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess

from pathlib import Path

import pytest

from playbooks import browser, engine, images, sources, toolchain
from playbooks.core.commands import LocalShell
from playbooks.core.settings import Lab

from ..conftest import source_folders, unavailable

# One set of clusters per checkout (as the kwok testbed's name): test runs in two checkouts side by side
# never delete each other's clusters.
CHECKOUT = hashlib.sha256(str(Path(__file__).resolve().parents[2]).encode()).hexdigest()[:4]
REAL_CLUSTER = f"kindlab-real-{CHECKOUT}"
NEEDED_IMAGES = tuple(images.user_images())  # what `invoke setup` builds: the node, nginx, ray, monitoring's, faas's
NEEDED_ARCHIVES = ("faas-cli", "of-watchdog", "python-flask-template",  # the function, built for real
                   "kube-state-metrics", "kube-webhook-certgen")       # and monitoring's two programs
# kindlab.sources for invoke run as a subprocess (what .ci/run exports)
SOURCES_ENV = {f"INVOKE_KINDLAB_SOURCES_{group.upper()}": folder for group, folder in source_folders().items()}


def real_required() -> bool:
    flag = os.environ.get("KINDLAB_REQUIRE_REAL")
    if flag is not None:
        return flag not in ("", "0", "false")
    return bool(os.environ.get("CI"))


def missing_prerequisites(sh) -> str | None:
    bin_dir = toolchain.default_bin_dir()
    folders = source_folders()
    missing = [(name, reason) for name in NEEDED_ARCHIVES if (reason := sources.reason_missing(name, folders))]
    if missing:
        name, reason = missing[0]
        return (f"source archives not at hand: {reason} "
                f"(or set INVOKE_KINDLAB_SOURCES_{sources.ARCHIVES[name].group.upper()})")
    tools = [name for name in ("kind", "kubectl", "faas-cli") if not toolchain.is_current(name, bin_dir)]
    if tools:
        return f"{', '.join(tools)} missing in {bin_dir}: run `invoke tools.install --testbed` (or `invoke setup`)"
    if engine.engine_info(sh) is None:
        return "no Docker engine answers: run `invoke docker.start` as root (or `invoke setup`)"
    problem = engine.privileged_problem(sh)
    if problem:
        return f"{problem[1]}: {engine.CAPS_FIX}"
    stale = [name for name in NEEDED_IMAGES if not images.current(sh, name)]
    if stale:
        return f"image(s) {', '.join(stale)} not built: run `invoke images.build` (or `invoke setup`)"
    return None


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now on 127.0.0.1, held open together so they differ."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="session")
def real_lab(tmp_path_factory) -> Lab:
    """A kind Lab in offline mode, its state and kubeconfig in a temporary home."""
    sh = LocalShell(toolchain.default_bin_dir())
    problem = missing_prerequisites(sh)
    if problem:
        message = f"real kind cluster tests: {problem}"
        unavailable(message, real_required())
    home = tmp_path_factory.mktemp("kindlab-real")
    nginx_port, http_port, gateway_port = free_ports(3)
    return Lab(provider="kind", cluster=REAL_CLUSTER, home=home, kubeconfig=home / "kubeconfig",
               ports=(("nginx", nginx_port), ("http", http_port), ("gateway", gateway_port)),
               bin_dir=toolchain.default_bin_dir(), offline=True, timeout=300,
               retry_attempts=3, retry_initial=0.5, sources=tuple(sorted(source_folders().items())))


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, which `invoke setup` installs as root; missing, the test skips (CI: fails)."""
    found = browser.find()
    if found is None:
        message = f"no chromium to render the Prometheus UI with: install it with {browser.INSTALL}"
        unavailable(message, real_required())
    return found


def kind_containers(sh, cluster: str) -> list[str]:
    out = sh.run(["docker", "ps", "-a", "--filter", f"label=io.x-k8s.kind.cluster={cluster}",
                  "--format", "{{.Names}}"]).stdout
    return out.split()


def group(pgid: int) -> list[tuple[int, str]]:
    """(pid, whole command line) of the processes still running in a process group (a zombie has
    ended; only its reaping is left). `-ww`: a narrow ps would cut the lines."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 3) for line in out.splitlines()]
    return [(int(r[0]), r[3]) for r in rows if len(r) == 4 and r[1] == str(pgid) and not r[2].startswith("Z")]


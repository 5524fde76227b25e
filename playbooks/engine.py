"""The Docker engine play: make `docker info` answer, and privileged containers run.

Every kind node is a `--privileged` container. Where no engine runs, and
kindlab runs as root on a machine with apt-get, `docker.start` installs
Debian's docker.io and starts dockerd detached from the invoke process (its
log in kindlab's home). On a host whose capability bounding set lacks
capabilities `--privileged` asks for (some VMs and sandboxes: runc then fails
with "unable to apply caps: operation not permitted"), dockerd gets kindlab's
runtime wrapper (tools/capdrop-runc) as its default runtime: it drops from each
container's spec the capabilities the host cannot grant, then runs runc.
Elsewhere the step fails and says what to install or start.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import toolchain
from .core.commands import CommandError
from .core.settings import Lab
from .core.steps import Step, StepFailed, change, ok, skip

RUNTIME_NAME = "kindlab-capdrop"
WRAPPER = "capdrop-runc"
DAEMON_JSON = Path("/etc/docker/daemon.json")
START_TIMEOUT_S = 60.0
# The highest capability number Docker 20.10+ and runc know (CAP_CHECKPOINT_RESTORE);
# `--privileged` asks for every one of them.
LAST_CAP = 40
CAPS_FIX = ("stop this dockerd, then run `invoke docker.start` as root: it starts dockerd with kindlab's "
            "runtime wrapper, which drops the capabilities this host cannot grant")


def bounding_set(status: str | None = None) -> int | None:
    """This process's capability bounding set (CapBnd), or None where there is none to read."""
    try:
        text = status if status is not None else Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("CapBnd:"):
            return int(line.split(":", 1)[1].strip(), 16)
    return None


def missing_caps(status: str | None = None) -> list[int]:
    """Capability numbers `--privileged` asks for that the bounding set lacks."""
    caps = bounding_set(status)
    if caps is None:
        return []
    return [n for n in range(LAST_CAP + 1) if not caps & (1 << n)]


def wrapper_path(lab: Lab) -> Path:
    return toolchain.tool_path(WRAPPER, toolchain.component_dir(lab.tools_dir))


def engine_info(sh) -> dict | None:
    """`docker info` as a dict when an engine answers, else None."""
    if sh.which("docker") is None:
        return None
    try:
        out = sh.run(["docker", "info", "--format", "{{json .}}"], timeout=20).stdout
    except CommandError:
        return None
    try:
        info = json.loads(out or "{}")
    except ValueError:
        return None
    # A client whose daemon is down prints its own fields and a ServerErrors list.
    return info if info.get("ServerVersion") else None


def _log_path(lab: Lab) -> Path:
    return lab.home / "engine" / "dockerd.log"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _systemd_runs() -> bool:
    """True when systemd is PID 1: dockerd then belongs to its docker.service."""
    return Path("/run/systemd/system").is_dir()


def _cannot_install_reason(sh) -> str | None:
    if not sys.platform.startswith("linux"):
        return "kindlab installs Docker only on Linux: install and start Docker Desktop"
    if not _is_root():
        return ("no Docker engine answers, and installing one needs root: install Docker and start it "
                "(Debian/Ubuntu: `sudo apt-get install docker.io`), or run `sudo invoke docker.start`")
    if sh.which("apt-get") is None:
        return ("no Docker engine answers and there is no apt-get here: install Docker with your "
                "distribution's package manager and start it")
    return None


def start_steps(lab: Lab, optional: bool = False) -> list[Step]:
    """docker.io present, the runtime wrapper where caps are missing, dockerd answering.

    optional (for `invoke setup`): where no engine can be had (no root, no
    apt-get), the steps are skipped with the reason instead of failing.
    """
    seen = _Engine()  # `docker info`, read once by the checks and again once dockerd was started

    def cannot(reason: str):
        if optional:
            return skip(reason)
        raise StepFailed(reason)

    def answering(ctx) -> dict | None:
        return seen.info(ctx.sh)

    def check_installed(ctx):
        if answering(ctx):
            return ok("an engine answers")
        if ctx.sh.which("dockerd"):
            return ok(f"dockerd installed ({ctx.sh.which('dockerd')})")
        reason = _cannot_install_reason(ctx.sh)
        if reason:
            return cannot(reason)
        return change("install Debian's docker.io with apt-get")

    def install(ctx):
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        ctx.say("apt-get update")
        ctx.sh.run(["apt-get", "update", "-q"], env=env, timeout=600)
        ctx.say("apt-get install docker.io")
        ctx.sh.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "docker.io"], env=env,
                   timeout=1200)
        return "installed docker.io"

    def check_wrapper(ctx):
        missing = missing_caps()
        if not missing:
            return ok("not needed: the capability bounding set is complete")
        info = answering(ctx)
        if info and info.get("DefaultRuntime") == RUNTIME_NAME:
            return ok(f"dockerd runs with {RUNTIME_NAME}")
        have = toolchain.installed_version(WRAPPER, toolchain.component_dir(lab.tools_dir))
        if have == toolchain.COMPONENTS[WRAPPER].version:
            return ok(f"{WRAPPER} {have} (host lacks capabilities {', '.join(map(str, missing))})")
        return change(f"build {WRAPPER}: this host lacks capabilities {', '.join(map(str, missing))} "
                      "that --privileged asks for")

    def build_wrapper(ctx):
        try:
            toolchain.install(WRAPPER, toolchain.component_dir(lab.tools_dir), source="go", log=ctx.say)
        except toolchain.ToolInstallError as exc:
            raise StepFailed(str(exc)) from None
        return f"built {wrapper_path(lab)}"

    def check_running(ctx):
        info = answering(ctx)
        if info:
            detail = f"Docker {info.get('ServerVersion')}, default runtime {info.get('DefaultRuntime')}"
            if missing_caps() and info.get("DefaultRuntime") != RUNTIME_NAME:
                detail += (f"; warning: this host lacks capabilities --privileged asks for and this engine "
                           f"was not started by kindlab, so kind nodes may fail: see `invoke doctor`")
            return ok(detail)
        reason = _cannot_install_reason(ctx.sh)
        if reason:
            return cannot(reason)
        return change("start dockerd" + (" (systemd: docker.service)" if _systemd_runs() else
                                         f" detached, logging to {_log_path(lab)}"))

    def start(ctx):
        runtime = wrapper_path(lab) if missing_caps() else None
        if _systemd_runs():
            if runtime:
                _register_runtime(runtime)
            ctx.sh.run(["systemctl", "start", "docker"], timeout=120)
            return "started docker.service"
        pid = _start_detached(lab, runtime)
        return f"started dockerd (pid {pid}; log {_log_path(lab)})" + \
            (f" with default runtime {RUNTIME_NAME}" if runtime else "")

    def wait_answering(ctx):
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            info = seen.info(ctx.sh, again=True)
            if info:
                return f"Docker {info.get('ServerVersion')} answers (default runtime {info.get('DefaultRuntime')})"
            if time.monotonic() > deadline:
                raise StepFailed(f"dockerd did not answer within {START_TIMEOUT_S:.0f}s; its log "
                                 f"({_log_path(lab)}) ends:\n{_tail(_log_path(lab))}")
            if ctx.cancelled.wait(0.5):
                raise StepFailed("interrupted (Ctrl-C) while waiting for dockerd")

    return [
        Step("docker.io installed", check_installed, install),
        Step(f"runtime wrapper {WRAPPER}", check_wrapper, build_wrapper),
        Step("Docker engine answers", check_running, start, wait=wait_answering),
    ]


class _Engine:
    """What `docker info` said (None: no engine answers), read once until asked again."""

    def __init__(self):
        self._read = False
        self._info: dict | None = None

    def info(self, sh, again: bool = False) -> dict | None:
        if again or not self._read:
            self._info, self._read = engine_info(sh), True
        return self._info


def _start_detached(lab: Lab, runtime: Path | None) -> int:
    """dockerd in its own session, so it outlives this invoke run (and its Ctrl-C)."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise StepFailed("dockerd is not on PATH after installing docker.io; check `dpkg -L docker.io`")
    argv = [dockerd]
    if runtime:
        argv += ["--add-runtime", f"{RUNTIME_NAME}={runtime}", "--default-runtime", RUNTIME_NAME]
    log = _log_path(lab)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as handle:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd="/")
    time.sleep(0.2)
    if proc.poll() is not None:
        raise StepFailed(f"dockerd exited at once (code {proc.returncode}); its log ({log}) ends:\n{_tail(log)}")
    return proc.pid


def _register_runtime(runtime: Path) -> None:
    """Add the wrapper to /etc/docker/daemon.json as the default runtime, keeping what is there."""
    try:
        config = json.loads(DAEMON_JSON.read_text()) if DAEMON_JSON.exists() else {}
    except ValueError as exc:
        raise StepFailed(f"{DAEMON_JSON} is not valid JSON ({exc}); fix it and run again") from None
    config.setdefault("runtimes", {})[RUNTIME_NAME] = {"path": str(runtime)}
    config["default-runtime"] = RUNTIME_NAME
    DAEMON_JSON.parent.mkdir(parents=True, exist_ok=True)
    DAEMON_JSON.write_text(json.dumps(config, indent=2) + "\n")


def _tail(path: Path, lines: int = 8) -> str:
    try:
        kept = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "  (no log)"
    return "\n".join("  " + line for line in kept)


# --- what doctor asks ------------------------------------------------------------
def privileged_problem(sh) -> tuple[str, str] | None:
    """(status, detail) when a `--privileged` container cannot start here, else None.

    Tries one with a local image (nothing can be pulled) and an entrypoint that
    does not exist: runc applies capabilities before it looks for the program,
    so "unable to apply caps" means privileged containers fail, and "no such
    file" means they start. Without any local image it reasons from the
    bounding set and the engine's default runtime instead.
    """
    out = sh.run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], check=False).stdout
    images = [line for line in out.splitlines() if line and "<none>" not in line]
    if not images:
        missing = missing_caps()
        if not missing:
            return None
        info = engine_info(sh) or {}
        if info.get("DefaultRuntime") == RUNTIME_NAME:
            return None
        return ("fail", f"this host lacks capabilities {', '.join(map(str, missing))} that --privileged "
                        f"asks for, and the engine's default runtime is {info.get('DefaultRuntime', '?')}")
    probe = sh.run(["docker", "run", "--rm", "--privileged", "--network", "none",
                    "--entrypoint", "/kindlab-doctor-probe-does-not-exist", images[0]], check=False, timeout=60)
    text = (probe.stderr + probe.stdout).lower()
    if "unable to apply caps" in text:
        return ("fail", f"`docker run --privileged {images[0]}` fails: unable to apply caps: operation not "
                        "permitted (the host's capability bounding set lacks some)")
    return None


__all__ = ["start_steps", "engine_info", "missing_caps", "privileged_problem", "RUNTIME_NAME", "CAPS_FIX"]

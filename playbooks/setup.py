"""`invoke setup --host HOST`: the host prepared as `invoke setup` prepares this machine, from this machine.

Its tools are copied from this machine's tool cache (same platform only: tools.host_steps), a Python 3
and a Docker engine must answer there, and the offline lab's images are sent from this machine's engine
where the host's lack them (images.host_steps). Each step says what it did there; a rerun changes nothing.
"""
from __future__ import annotations

from . import images, tools
from .core.settings import Lab
from .core.steps import Step, StepFailed, ok


def host_steps(lab: Lab, source: str = "auto") -> list[Step]:
    host = lab.host

    def python_check(ctx):
        found = ctx.sh.which("python3")
        if not found:
            raise StepFailed(f"python3 is not on {host}'s PATH: kindlab runs its small helpers there with it; "
                             "install it there (Debian: `apt-get install python3`)")
        return ok(f"python3 at {found}")

    def engine_check(ctx):
        from .engine import engine_info
        info = engine_info(ctx.sh)
        if not info:
            raise StepFailed(f"no Docker engine answers on {host}: install and start Docker there (Debian: "
                             "`invoke setup` run there as root does it) and add this user to the docker group")
        return ok(f"Docker {info.get('ServerVersion')} answers on {host}")

    tool_steps = tools.host_steps(lab, list(tools.TEST_TOOLS), source, optional=True)
    engine = Step(f"Docker engine on {host}", engine_check, needs=())
    return [Step(f"python3 on {host}", python_check, needs=()), *tool_steps, engine,
            *images.host_steps(lab, images.user_images(), needs=(engine.name,))]


def sshd_steps(optional: bool = True, after: str | None = None) -> list[Step]:
    """Debian's OpenSSH server, which the tests start on a loopback port as the `--host` test host: installed
    as root with apt-get (its list updated first), `after` another apt-get step (one at a time); elsewhere
    skipped with the reason (those tests skip too)."""
    from pathlib import Path

    from .core.steps import change, skip

    sshd = Path("/usr/sbin/sshd")

    def check(ctx):
        if sshd.exists():
            return ok(f"{sshd} (the SSH tests' host)")
        import os
        reason = ("installing openssh-server needs root" if os.geteuid() != 0 else
                  "there is no apt-get here" if ctx.sh.which("apt-get") is None else "")
        if reason:
            message = f"openssh-server not installed: {reason}; the SSH tests skip"
            if optional:
                return skip(message)
            raise StepFailed(message)
        return change("install Debian's openssh-server with apt-get (for the SSH tests' host)")

    def install(ctx):
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        ctx.sh.run(["apt-get", "update", "-q"], env=env, timeout=600)
        ctx.sh.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "openssh-server"], env=env,
                   timeout=600)
        return "installed openssh-server (its service is not started: the tests start their own sshd)"

    return [Step("openssh-server (the SSH tests' host)", check, install, needs=(after,) if after else ())]


__all__ = ["host_steps", "sshd_steps"]

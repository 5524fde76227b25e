"""Glue between Invoke tasks and plays: flags -> Lab -> steps -> runner -> exit code."""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from invoke.exceptions import Exit
from rich.console import Console

from .commands import LocalShell
from .filelock import LockBusy, locked
from .runner import PlayFailed, Reporter, StepContext, run_play
from .settings import SCHEMA, Lab, SettingsError, lab_from_config
from .steps import Step, StepFailed, Unreachable

# Help for the flags every play task takes (Invoke shows it under `invoke --help TASK`).
COMMON_HELP = {
    "provider": "kind (default), kwok (simulated, no Docker) or existing (any context)",
    "name": "cluster name (default: cloud-hw, or the last cluster.create)",
    "context": "kubeconfig context, with --provider existing",
    "check": "only check: print what would change, change nothing",
    "verbose": "stream the tools' own output",
    "timeout": "seconds a wait may take before it fails with its reason (default 300, at most a day)",
    "offline": "no container registry: use the images `invoke images.build` made (kind: its node image)",
    "host": "run the lab on this host over SSH: user@box[:port] or a Host alias of ~/.ssh/config "
            "(default kindlab.host; the last cluster.create's)",
}
console = Console(highlight=False)


def lab_for(c, schema: Mapping = SCHEMA, **flags) -> Lab:
    """The Lab from Invoke's `kindlab:` configuration, checked against `schema`, and the task's flags."""
    try:
        return lab_from_config(c.config.get("kindlab", {}), schema, **flags)
    except SettingsError as exc:
        raise Exit(f"error: {exc}", code=2) from None


def user_errors(body: Callable) -> Callable:
    """A task body whose user errors end it with one `error:` line: bad input exit 2, a failure exit 1."""
    import functools

    @functools.wraps(body)
    def run(*args, **kwargs):
        try:
            return body(*args, **kwargs)
        except SettingsError as exc:
            raise Exit(f"error: {exc}", code=2) from None
        except (StepFailed, Unreachable) as exc:
            raise Exit(f"error: {exc}", code=1) from None
    return run


def make_shell(lab: Lab) -> LocalShell:
    """The connection the lab's commands go through: this machine (kindlab's tool cache first on PATH), or
    with a host the SSH connection to it (core/ssh.py), connected now so a wrong host stops the task at once."""
    if lab.host:
        from .ssh import SshShell
        return SshShell(lab, verbose=lab.verbose).open()
    return LocalShell(lab.tools_dir, verbose=lab.verbose)


def make_context(lab: Lab, reporter: Reporter | None = None) -> StepContext:
    shell = make_shell(lab)
    # kindlab made the cluster, so it can start what died in it; an existing cluster is the user's
    fix = "`invoke cluster.create` restarts it" if lab.can.creates_clusters else ""

    def kube():
        from .kube import Kube  # the kubernetes client is slow to import (half a second): only a step that uses it

        if lab.host:  # the client runs here: the host's API server comes through kindlab's SSH tunnel
            from .kubeconfig import tunnel
            tunnel(lab, shell)
        return Kube(lab.kubeconfig, lab.context, fix=fix, fixed_nodes=lab.can.fixed_nodes)

    return StepContext(lab, shell, kube, reporter)


def lock_path(lab: Lab) -> Path:
    return lab.home / "locks" / f"{(lab.context or 'none').replace('/', '_').replace(':', '_')}.lock"


@contextlib.contextmanager
def cluster_lock(lab: Lab) -> Iterator[None]:
    """One kindlab run per cluster: a second one exits with a clear message, never interleaves."""
    note = f"{os.getpid()}\n{' '.join(sys.argv[1:]) or 'invoke'}\n{time.strftime('%H:%M:%S')}\n"
    with contextlib.ExitStack() as stack:
        try:  # only taking the lock can be refused; the play's own errors pass through
            stack.enter_context(locked(lock_path(lab), note))
        except LockBusy as busy:
            pid, what, since = (busy.note.splitlines() + ["?", "?", "?"])[:3]
            raise Exit(f"error: another kindlab run (pid {pid}, `{what}`, since {since}) is working on "
                       f"{lab.context}; wait for it to finish or stop it, then run this again", code=3) from None
        yield


def play(lab: Lab, title: str, steps: Sequence[Step] | Callable[[], Sequence[Step]],
         after: Callable[[Lab], None] | None = None, lock: bool = True) -> list:
    """Run a play for a task: header, lock, steps, recap; a failure becomes a non-zero exit."""
    mode = " (check mode: nothing will change)" if lab.check_mode else ""
    where = f" on [cyan]{lab.context}[/cyan] ({lab.provider})" if lock else ""
    over = f" on host [cyan]{lab.host}[/cyan] over SSH" if lab.host and not lock else ""
    console.print(f"[bold]{title}[/bold]{where}{over}{mode}")
    ctx = make_context(lab, Reporter(console))
    guard = cluster_lock(lab) if lock and not lab.check_mode else contextlib.nullcontext()
    try:
        with guard:
            outcomes = run_play(title, steps() if callable(steps) else steps, ctx, check_mode=lab.check_mode)
    except PlayFailed:
        raise Exit(code=1) from None
    except KeyboardInterrupt:
        raise Exit(code=130) from None
    finally:
        if lab.host:
            sent = ctx.sh.uploaded
            console.print(f"[dim]{lab.host}: uploaded {sent['bytes']} bytes in {sent['files']} file(s), "
                          f"{sent['unchanged']} upload(s) unchanged; {ctx.sh.connections} SSH connection(s)[/dim]")
        ctx.sh.close()
    if after and not lab.check_mode:
        after(lab)
    return outcomes


__all__ = ["COMMON_HELP", "lab_for", "play", "make_context", "cluster_lock", "console", "user_errors"]

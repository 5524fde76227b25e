"""Long-lived local processes that outlive the kindlab run that started them.

The simulated cluster's operators run beside its control plane: started by
`cluster.create`, stopped by `cluster.delete`, each with a pid file and a log
file. A pid file is trusted only while that pid still runs the same command
line, so a recycled pid is never taken for a live daemon (or killed).

With `restart`, the daemon runs under this file's own small supervisor (run as
a script, standard library only), which starts the program again when it exits,
as a kubelet restarts a crashing container. With `needs_crds` it also starts
the program only once those CRDs are Established, as a chart starts its
operator only after its CRDs: prometheus-operator checks once, at start, which
of its CRDs exist, and runs without the controllers of the missing ones.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence


RESTART_MAX_S = 5.0  # the supervisor's longest pause before starting the program again


@dataclass(frozen=True)
class Daemon:
    name: str
    argv: Sequence[str]
    home: Path  # holds NAME.pid and NAME.log
    env: dict = field(default_factory=dict, hash=False)
    restart: bool = False
    needs_crds: tuple[str, ...] = ()  # with restart: start only once these are Established
    kubectl: str = "kubectl"          # reads them (KUBECONFIG from env)

    @property
    def command(self) -> list[str]:
        """What is started: the program, or the supervisor running it."""
        argv = [str(a) for a in self.argv]
        if not self.restart:
            return argv
        needs = ["--needs-crds", ",".join(self.needs_crds), "--kubectl", self.kubectl] if self.needs_crds else []
        return [sys.executable, str(Path(__file__).resolve()), *needs, "--", *argv]

    @property
    def pid_file(self) -> Path:
        return self.home / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.home / f"{self.name}.log"


def running_pid(daemon: Daemon) -> int | None:
    """The daemon's pid while that process runs its program, else None."""
    try:
        pid = int(daemon.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not alive(pid):
        return None
    proc = Path(f"/proc/{pid}")
    if proc.exists():  # Linux: make sure the pid was not handed to another program
        command = daemon.command
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
            # Right after exec the command line can read empty; comm has the name's first 15 characters.
            same = cmdline == command if cmdline else \
                (proc / "comm").read_text().strip() == Path(command[0]).name[:15]
        except OSError:
            return None
        if not same:
            return None
    return pid


def start(daemon: Daemon) -> int:
    """Start the daemon detached (its own session, output to its log); returns its pid."""
    daemon.home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **daemon.env}
    with open(daemon.log_file, "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {' '.join(map(str, daemon.argv))}\n".encode())
        log.flush()
        kwargs = ({"creationflags": subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP}
                  if sys.platform == "win32" else {"start_new_session": True})
        proc = subprocess.Popen(daemon.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, **kwargs)
    tmp = daemon.pid_file.with_suffix(".pid.tmp")
    tmp.write_text(str(proc.pid))
    os.replace(tmp, daemon.pid_file)
    return proc.pid


def stop(daemon: Daemon, timeout: float = 5.0) -> bool:
    """Stop the daemon if it runs (SIGTERM, then SIGKILL); True when one was stopped."""
    pid = running_pid(daemon)
    daemon.pid_file.unlink(missing_ok=True)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    if hasattr(signal, "SIGKILL"):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return True


def last_lines(daemon: Daemon, lines: int = 3) -> str:
    """The end of the daemon's log, for a message about why it stopped."""
    try:
        text = daemon.log_file.read_text(errors="replace")
    except OSError:
        return "no log"
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "empty log"


def alive(pid: int) -> bool:
    """Whether a process with this pid runs (a zombie does not)."""
    if sys.platform == "win32":
        import ctypes
        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)
        if handle:
            ctypes.windll.kernel32.CloseHandle(handle)
        return bool(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive. Its first thread turns zombie
    # before the others have closed the program's files (its listening sockets among them), so
    # every thread is looked at.
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for tid in tasks:
        try:
            if Path(f"/proc/{pid}/task/{tid}/stat").read_text().split(") ", 1)[1][0] != "Z":
                return True
        except (OSError, IndexError):
            continue  # that thread is gone
    return False


def crds_established(kubectl: str, names: Sequence[str]) -> bool:
    """Whether every named CRD exists and is Established (asked with kubectl, as the supervisor has no client)."""
    import json
    try:
        out = subprocess.run([kubectl, "get", "crd", *names, "-o", "json"], capture_output=True, text=True,
                             timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if out.returncode != 0:  # one is missing
        return False
    items = json.loads(out.stdout).get("items") or []
    return len(items) == len(names) and all(
        any(c.get("type") == "Established" and c.get("status") == "True"
            for c in (i.get("status") or {}).get("conditions") or []) for i in items)


def supervise(argv: list[str], restart_max: float = RESTART_MAX_S, needs_crds: Sequence[str] = (),
              kubectl: str = "kubectl") -> int:
    """Run `argv` until SIGTERM/SIGINT, starting it again (with a growing pause) whenever it exits;
    with `needs_crds`, each start waits until those CRDs are Established."""
    import threading

    child: list[subprocess.Popen] = []
    stopping = threading.Event()

    def end(signum, frame):
        # No waiting in here: the main loop is inside child.wait(), which holds its lock.
        stopping.set()
        if not child:
            sys.exit(0)
        child[0].terminate()
        killer = threading.Timer(5, child[0].kill)  # a program that ignores SIGTERM
        killer.daemon = True
        killer.start()

    def outlive_no_cluster():
        # Once its cluster's kubeconfig is gone (kwokctl deleted the cluster, perhaps from a run with
        # another kindlab home that could not find this pid file), stop as on SIGTERM.
        kubeconfig = os.environ.get("KUBECONFIG", "")
        while kubeconfig and Path(kubeconfig).exists():
            time.sleep(2)
        if kubeconfig:
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, end)
    threading.Thread(target=outlive_no_cluster, daemon=True).start()
    pause = 0.5
    while True:
        if needs_crds and not crds_established(kubectl, needs_crds):
            print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} waiting for CRDs {', '.join(needs_crds)} "
                  f"before starting {Path(argv[0]).name}", flush=True)
            while not crds_established(kubectl, needs_crds):
                time.sleep(2)
        started = time.monotonic()
        child[:] = [subprocess.Popen(argv, stdin=subprocess.DEVNULL)]
        code = child[0].wait()
        if stopping.is_set():
            return 0
        if time.monotonic() - started > 60:
            pause = 0.5  # it had been running: a fresh failure, not a loop
        print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {Path(argv[0]).name} exited with code {code}; "
              f"starting it again in {pause:.1f}s", flush=True)
        time.sleep(pause)
        pause = min(pause * 2, restart_max)


__all__ = ["Daemon", "running_pid", "start", "stop", "last_lines", "alive", "supervise"]


def _main(args: list[str]) -> int:
    """`daemons.py [--needs-crds A,B --kubectl PATH] -- PROGRAM ARGS...`"""
    split = args.index("--")
    options, argv = dict(zip(args[:split:2], args[1:split:2])), args[split + 1:]
    needs = [n for n in options.get("--needs-crds", "").split(",") if n]
    return supervise(argv, needs_crds=needs, kubectl=options.get("--kubectl", "kubectl"))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

"""Long-lived processes that outlive the kindlab run that started them, on the machine the lab's
commands run on (through the connection, `sh`: this machine by default, or a host over SSH).

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

    def command(self, sh) -> list[str]:
        """What is started: the program, or the supervisor (this file, run by that machine's Python) running it."""
        argv = [str(a) for a in self.argv]
        if not self.restart:
            return argv
        needs = ["--needs-crds", ",".join(self.needs_crds), "--kubectl", self.kubectl] if self.needs_crds else []
        return [sh.python, sh.put(Path(__file__).resolve()), *needs, "--", *argv]

    @property
    def pid_file(self):
        return self.home / f"{self.name}.pid"

    @property
    def log_file(self):
        return self.home / f"{self.name}.log"


def running_pid(daemon: Daemon, sh) -> int | None:
    """The daemon's pid while that process runs its program, else None."""
    try:
        pid = int((sh.read_text(daemon.pid_file) or "").strip())
    except ValueError:
        return None
    args = sh.proc_args(pid)
    if args is None:
        return None
    # The pid may have been handed to another program since (right after exec its command line can read empty).
    return pid if not args or args == daemon.command(sh) else None


def start(daemon: Daemon, sh) -> int:
    """Start the daemon detached (its own session, output to its log); returns its pid."""
    sh.mkdir(daemon.home)
    header = f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {' '.join(map(str, daemon.argv))}\n"
    pid = sh.start_detached(daemon.command(sh), daemon.log_file, env=daemon.env, header=header)
    sh.write_text(daemon.pid_file, str(pid))
    return pid


def stop(daemon: Daemon, sh, timeout: float = 5.0) -> bool:
    """Stop the daemon if it runs (SIGTERM, then SIGKILL); True when one was stopped."""
    pid = running_pid(daemon, sh)
    sh.remove(daemon.pid_file)
    if pid is None:
        return False
    sh.signal(pid, "TERM")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sh.proc_args(pid) is None:
            return True
        time.sleep(0.05)
    sh.signal(pid, "KILL")
    return True


def last_lines(daemon: Daemon, sh, lines: int = 3) -> str:
    """The end of the daemon's log, for a message about why it stopped."""
    text = sh.read_text(daemon.log_file)
    if text is None:
        return "no log"
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "empty log"




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

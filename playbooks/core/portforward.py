"""`kubectl port-forward`: short-lived (a context manager) or kept alive until Ctrl-C (Supervisor)."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .commands import free_port, port_free  # noqa: F401 (free_port: for callers of this module)
from .steps import StepFailed


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def forwarded(ctx, namespace: str, target: str, remote_port: int, local_port: int | None = None,
              timeout: float = 30.0) -> Iterator[str]:
    """Forward a port here to `target` (e.g. svc/raylab-head-svc) for as long as the block runs; yields the
    URL base. kubectl runs where the lab's commands run; on a host its port is forwarded here over SSH."""
    lab = ctx.lab
    for attempt in range(1 if local_port else 3):  # a port picked here and taken meanwhile: another one
        there = local_port or ctx.sh.free_port()
        if not ctx.sh.port_free(there):
            raise StepFailed(f"local port {there} is already in use: stop what listens there "
                             "(another port-forward?) or choose another port")
        proc = ctx.sh.spawn(["kubectl", *lab.cluster_flags(), "-n", namespace, "port-forward", "--address",
                             "127.0.0.1", target, f"{there}:{remote_port}"])
        listening = threading.Event()  # kubectl says "Forwarding from 127.0.0.1:PORT" once it listens
        threading.Thread(target=_watch_for, args=(proc.stdout, "Forwarding from", listening), daemon=True).start()
        try:
            deadline = time.monotonic() + timeout
            while not listening.wait(0.1):
                if proc.poll() is not None:
                    said = (proc.stderr.read() or "").strip()[-300:]
                    if not local_port and "address already in use" in said and attempt < 2:
                        break
                    raise StepFailed(f"port-forward to {namespace}/{target}:{remote_port} exited: {said}")
                if time.monotonic() > deadline:
                    raise StepFailed(f"port-forward to {namespace}/{target} not open after {timeout:.0f}s")
            else:
                yield f"http://127.0.0.1:{ctx.sh.forward(there)}"
                return
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except Exception:
                    proc.kill()


def _watch_for(stream, marker: str, seen: threading.Event) -> None:
    """Read a child's output to its end (so it never blocks on a full pipe), noting `marker`."""
    try:
        for line in stream:
            if marker in line:
                seen.set()
    except (OSError, ValueError):
        pass


# --- kept alive until Ctrl-C -----------------------------------------------------
@dataclass
class Forward:
    """One `kubectl port-forward` the supervisor keeps running."""

    name: str
    argv: list[str]
    local_port: int
    proc: object = None
    started: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    far_port: int = 0  # on a host: where kubectl listens there
    output: deque = field(default_factory=lambda: deque(maxlen=20))

    def spawn(self, shell, now: float) -> None:
        if getattr(shell, "host", ""):  # kubectl listens on a free port of the host, forwarded here to local_port over SSH
            if not self.far_port:
                self.far_port = shell.free_port()
                self.argv = [*self.argv[:-1], f"{self.far_port}:{self.argv[-1].rpartition(':')[2]}"]
            shell.forward(self.far_port, local_port=self.local_port)
        self.proc = shell.spawn(self.argv)
        self.started = now
        # kubectl prints a line per connection: drain its pipes so it never blocks on a full one
        for stream in (getattr(self.proc, "stdout", None), getattr(self.proc, "stderr", None)):
            if stream is not None:
                threading.Thread(target=_drain, args=(stream, self.output), daemon=True).start()

    def last_words(self) -> str:
        lines = [ln for ln in list(self.output) if ln and not ln.startswith("Handling connection")]
        return lines[-1] if lines else "no message"


def _drain(stream, sink: deque) -> None:
    try:
        for line in stream:
            sink.append(line.strip())
    except (OSError, ValueError):
        pass


class Supervisor:
    """Keeps port-forwards running: one that exits (its pod was replaced) is started again."""

    def __init__(self, shell, forwards: list[Forward], say: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic, backoff: float = 1.0, backoff_max: float = 10.0,
                 healthy_after: float = 30.0):
        self.shell, self.forwards, self.say, self.clock = shell, forwards, say, clock
        self.backoff, self.backoff_max, self.healthy_after = backoff, backoff_max, healthy_after

    def start(self) -> None:
        busy = [f for f in self.forwards if not port_free(f.local_port)]
        if busy:
            names = ", ".join(f"{f.local_port} ({f.name})" for f in busy)
            raise StepFailed(f"local port(s) {names} already in use: stop what listens there "
                             "(an earlier `invoke monitoring.dashboards`?) and run this again")
        for forward in self.forwards:
            forward.spawn(self.shell, self.clock())

    def tick(self) -> None:
        """Look at every forward once; restart the ones that exited, with a growing pause."""
        now = self.clock()
        for f in self.forwards:
            if f.proc is None:
                if now >= f.next_start:
                    f.spawn(self.shell, now)
                continue
            code = f.proc.poll()
            if code is None:
                continue
            if now - f.started >= self.healthy_after:
                f.restarts = 0  # it had been running fine: a fresh failure, not a loop
            delay = min(self.backoff * (2 ** f.restarts), self.backoff_max)
            f.restarts += 1
            time.sleep(0.05)  # let the drain threads take its last words
            self.say(f"{f.name} port-forward exited (code {code}: {f.last_words()}); "
                     f"restarting in {delay:.0f}s")
            f.proc, f.next_start = None, now + delay

    def stop(self) -> None:
        for f in self.forwards:
            proc, f.proc = f.proc, None
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def run(self, stop: threading.Event, interval: float = 0.5) -> None:
        """Until `stop` is set or Ctrl-C; the children are always ended."""
        try:
            while not stop.is_set():
                self.tick()
                stop.wait(interval)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()



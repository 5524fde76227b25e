"""Running the external tools: argument lists only, never a shell.

The connection layer: every command a step runs goes through `ctx.sh`, one
connection object. `LocalShell` runs on this machine with kindlab's tool cache
first on PATH; with a host (`--host`, kindlab.host) `make_shell` (core/cli.py) gives the SSH
connection instead (core/ssh.py), which answers the same calls there. Besides
`run`, `which` and `spawn`, both answer the few file, port and process questions
a step asks of the machine its commands run on: `put` (a file of this machine
where the commands run: here the same path), `read_text`, `write_text`,
`exists`, `remove`, `mtime`, `forward`/`reach` (a port or URL of that machine,
reached from here), `port_free`, `free_port`, and the processes of
core/daemons.py (`proc_args`, `signal`, `start_detached`).
Secrets travel through stdin or the environment and are masked in every
message kindlab prints.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from . import deadline as deadlines

MASK = "****"
MIN_COMMAND_S = 1.0  # a command started as the step's time runs out still gets this long
VERBOSE_LINES = 200  # of each command's output, echoed live with --verbose
_SECRET_FLAGS = ("--password", "--token", "--client-key-data", "--secret")


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandError(Exception):
    """A tool exited non-zero (or could not start): argv masked, its own last lines kept."""

    def __init__(self, argv: Sequence[str], returncode: int | None, output: str, secrets: Iterable[str] = (),
                 timed_out: bool = False):
        self.argv = mask_argv(argv, secrets)
        self.returncode = returncode
        self.output = mask_text(output, secrets)
        self.timed_out = timed_out  # ended by its timeout (the step's deadline, unless the caller gave one)
        super().__init__(self._describe())

    def _describe(self) -> str:
        tail = "\n".join(line for line in self.output.strip().splitlines()[-8:])
        code = "could not start" if self.returncode is None else f"exited {self.returncode}"
        return f"`{' '.join(self.argv)}` {code}" + (f":\n{tail}" if tail else "")


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def mask_argv(argv: Sequence[str], secrets: Iterable[str] = ()) -> tuple[str, ...]:
    """Hide secret values, including whatever follows a --password style flag."""
    masked: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            masked.append(MASK)
            hide_next = False
            continue
        flag, eq, _ = arg.partition("=")
        if flag in _SECRET_FLAGS:
            if eq:
                masked.append(f"{flag}={MASK}")
            else:
                masked.append(arg)
                hide_next = True
            continue
        masked.append(mask_text(arg, secrets))
    return tuple(masked)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


class LocalShell:
    """Runs tools on this machine, the tool cache first on PATH."""

    host = ""  # this machine
    python = sys.executable  # for core/daemons.py's supervisor
    uploaded = {"bytes": 0, "files": 0, "unchanged": 0}  # nothing is ever sent anywhere

    def __init__(self, bin_dir: Path | None = None, *, verbose: bool = False,
                 echo: Callable[[str], None] | None = None):
        self.bin_dir = bin_dir
        self.verbose = verbose
        self.echo = echo or (lambda line: print(line, file=sys.stderr))
        self._children: list[subprocess.Popen] = []
        self._lock = threading.Lock()

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        if self.bin_dir:
            env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env.update(extra or {})
        return env

    def which(self, tool: str) -> str | None:
        return shutil.which(tool, path=self.env()["PATH"])

    def _resolve(self, argv: Sequence[str]) -> list[str]:
        # Resolve against our PATH so Windows finds kind.exe in the cache and so
        # a missing tool is reported by name instead of as a bare OSError.
        exe = self.which(argv[0])
        if exe is None:
            raise CommandError(argv, None, f"{argv[0]}: not found on PATH; run `invoke tools.install`")
        return [exe, *argv[1:]]

    def run(self, argv: Sequence[str], *, input: str | None = None, env: dict[str, str] | None = None,
            secrets: Iterable[str] = (), timeout: float | None = None, check: bool = True,
            cwd: str | Path | None = None, stop: threading.Event | None = None) -> Result:
        """Run a tool to its end; `stop` set meanwhile ends it early (it then exits non-zero).

        Without `timeout` it ends by the deadline of the step that runs it (core/deadline.py); a
        timeout the caller gives is its own (a clean-up that must outlive the step's time).
        """
        if timeout is None and (held := deadlines.current()) is not None:
            timeout = max(MIN_COMMAND_S, held.left())
        argv = [str(a) for a in argv]
        secrets = tuple(secrets)
        resolved = self._resolve(argv)
        if self.verbose:
            self.echo("$ " + " ".join(mask_argv(argv, secrets)))
        try:
            proc = subprocess.Popen(
                resolved, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                errors="replace", env=self.env(env), cwd=cwd)
        except OSError as exc:
            raise CommandError(argv, None, str(exc), secrets) from exc
        self._track(proc)
        if stop is not None:
            threading.Thread(target=_kill_when, args=(stop, proc), daemon=True).start()
        try:
            out, err = self._communicate(proc, input, timeout, secrets)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise CommandError(argv, None, f"timed out after {timeout:.0f}s", secrets, timed_out=True) from None
        except BaseException:  # Ctrl-C: never leave the child behind
            proc.kill()
            proc.wait()
            raise
        finally:
            self._untrack(proc)
        result = Result(tuple(argv), proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, _tail(err or out), secrets)
        return result

    def _communicate(self, proc, input, timeout, secrets) -> tuple[str, str]:
        if not self.verbose:
            return proc.communicate(input, timeout=timeout)
        # Stream each line live while keeping the whole output for the caller.
        chunks: dict[str, list[str]] = {"out": [], "err": []}
        argv_name = Path(proc.args[0]).name

        def pump(stream, key):
            for line in stream:
                chunks[key].append(line)
                if len(chunks[key]) <= VERBOSE_LINES:
                    self.echo("  " + mask_text(line.rstrip("\n"), secrets))
            if len(chunks[key]) > VERBOSE_LINES:  # `helm show crds` prints 4 MB: keep the terminal usable
                self.echo(f"  … {len(chunks[key]) - VERBOSE_LINES} more lines of {argv_name} not shown")

        threads = [threading.Thread(target=pump, args=(proc.stdout, "out"), daemon=True),
                   threading.Thread(target=pump, args=(proc.stderr, "err"), daemon=True)]
        for t in threads:
            t.start()
        if input is not None:
            proc.stdin.write(input)
            proc.stdin.close()
        proc.wait(timeout=timeout)
        for t in threads:
            t.join()
        return "".join(chunks["out"]), "".join(chunks["err"])

    def spawn(self, argv: Sequence[str], *, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a long-running child (a port-forward); ended by close() or at exit."""
        proc = subprocess.Popen(self._resolve([str(a) for a in argv]), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env(env))
        self._track(proc)
        return proc

    def _track(self, proc):
        with self._lock:
            self._children.append(proc)

    def _untrack(self, proc):
        with self._lock:
            if proc in self._children:
                self._children.remove(proc)

    def close(self) -> None:
        """End every child still running (Ctrl-C, end of task)."""
        with self._lock:
            children, self._children = self._children, []
        for proc in children:
            if proc.poll() is None:
                proc.terminate()
        for proc in children:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


    # --- the machine's files, ports and processes: here, as they are ----------------------------
    def far(self, path) -> str:
        """A path of the machine the commands run on, as a string (here: as it is)."""
        return str(path)

    def put(self, path, to=None) -> str:
        if to is not None and Path(to) != Path(path):
            Path(to).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, to)
            return str(to)
        return str(Path(path).expanduser())

    def get(self, path, local: Path) -> None:
        if Path(path) != local:
            shutil.copyfile(path, local)

    def read_text(self, path) -> str | None:
        try:
            return Path(path).read_text(errors="replace")
        except FileNotFoundError:
            return None

    def write_text(self, path, text: str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".kindlab-tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    def exists(self, path) -> bool:
        return Path(path).exists()

    def mkdir(self, path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)

    def mtime(self, path) -> float | None:
        try:
            return Path(path).stat().st_mtime
        except OSError:
            return None

    def remove(self, path) -> None:
        path = Path(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def forward(self, port: int, far_host: str = "127.0.0.1", local_port: int | None = None) -> int:
        return port

    def reach(self, url: str) -> str:
        return url

    def note(self, url: str) -> str:
        return ""

    def free_port(self) -> int:
        return free_port()

    def port_free(self, port: int, address: str = "127.0.0.1") -> bool:
        return port_free(port, address)

    def proc_args(self, pid: int) -> list[str] | None:
        from .daemons import alive  # daemons.py runs alone too (the supervisor): it imports nothing of kindlab

        if not alive(pid):
            return None
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        except OSError:
            return [] if sys.platform != "linux" else None

    def signal(self, pid: int, name: str) -> None:
        import signal as signals
        try:
            os.kill(pid, getattr(signals, f"SIG{name}"))
        except (ProcessLookupError, AttributeError):
            pass

    def start_detached(self, argv: Sequence[str], log, env: dict | None = None, header: str = "") -> int:
        """Start `argv` in its own session, `header` then its output appended to `log`; its pid."""
        log = Path(log)
        log.parent.mkdir(parents=True, exist_ok=True)
        kwargs = ({"creationflags": subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP}
                  if sys.platform == "win32" else {"start_new_session": True})
        with open(log, "ab") as out:
            out.write(header.encode())
            out.flush()
            proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, **kwargs)
        return proc.pid


def _kill_when(stop: threading.Event, proc: subprocess.Popen) -> None:
    while proc.poll() is None:
        if stop.wait(0.2):
            proc.kill()
            return


# --- this machine's ports -----------------------------------------------------------------------
def free_port(tries: int = 20) -> int:
    """A port of 127.0.0.1 something (kubectl, a test's server) can listen on. The kernel's free port comes
    from the range it also gives outgoing connections, and on a busy machine one of those can take it before
    it is used (seen in CI, with the kwok tests running beside the kind ones): a port taken so is passed over."""
    for _ in range(tries - 1):
        port = _kernel_port()
        if port_free(port):
            return port
    return _kernel_port()  # the caller's own check names it, if this one is taken too


def _kernel_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_free(port: int, address: str = "127.0.0.1") -> bool:
    """Whether kubectl could listen there (it sets SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True

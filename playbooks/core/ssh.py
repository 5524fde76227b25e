"""The lab on a host over SSH: the connection every command of a step goes through (fabric, paramiko).

`SshShell` answers what `LocalShell` answers (run, which, spawn, close, and the file, port and
process primitives in commands.py), so a step never asks where it runs. The far side is a Linux
host with a POSIX shell: each command runs through it as an argument list, every argument quoted
(a path under `~` is expanded there), kindlab's tool cache on that user's PATH first, and the
shell's pid read first so a command the step's deadline or Ctrl-C ends is killed there too.

Files a step needs there are uploaded explicitly (`put`), only when their content changed: the
sha256 of what was sent is kept beside it on the host. The Kubernetes client, the waits and the
HTTP checks stay on this machine: `forward` brings a port of the host here (the API server, a
node port, a port-forward), on the same port where it is free.

Authentication is SSH's own (the agent, keys, the ssh config's IdentityFile, known_hosts):
kindlab never asks for a password. An unknown host key is refused unless
`kindlab.ssh.accept_new_host_key` is set (then it is added to known_hosts, as OpenSSH's
accept-new). A connection that cannot be made is one `error:` line naming why (`HostError`,
exit 2); one lost while a step runs is a transient failure ("connection reset"), and the next
command connects again.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import posixpath
import select
import shlex
import socket
import tarfile
import threading
import time
from pathlib import Path, PurePath
from typing import Callable, Iterable, Sequence
from urllib.parse import urlsplit, urlunsplit

from . import deadline as deadlines
from .commands import MIN_COMMAND_S, CommandError, Result, _tail, mask_argv, mask_text
from .settings import Lab, SettingsError

CONNECT_TIMEOUT_S = 10
PID_MARK = "kindlab-pid "  # the first line a command prints on the host: the pid to end it by
LOST = "connection reset"  # a transient marker (steps.TRANSIENT_MARKERS): the step retries
UPLOADS = "uploads"        # under kindlab's home on the host


class HostError(SettingsError):
    """The host cannot be used as named (refused, unknown, wrong user or key, host key): exit 2."""


def _no_such_file(exc: OSError) -> bool:
    """SFTP's answer for a path that is not there (paramiko raises FileNotFoundError, or an IOError saying so)."""
    return isinstance(exc, FileNotFoundError) or "no such file" in str(exc).lower()


def quote(arg: str | PurePath) -> str:
    """An argument for the host's shell: quoted, a leading `~/` expanded there (to $HOME)."""
    text = str(arg)
    if text == "~":
        return '"$HOME"'
    if text.startswith("~/"):
        return '"$HOME"/' + shlex.quote(text[2:])
    return shlex.quote(text)


def command_line(argv: Sequence, *, env: dict | None = None, cwd=None, bin_dir=None) -> str:
    """The shell line that runs `argv` on the host and prints its pid first (it becomes the tool by exec)."""
    path = f"PATH={quote(bin_dir)}:\"$PATH\" " if bin_dir else ""
    assignments = "".join(f"{k}={quote(v)} " for k, v in (env or {}).items())
    go = f"cd {quote(cwd)} && " if cwd else ""
    return f"echo {PID_MARK}$$; {go}{path}exec env {assignments}{' '.join(quote(a) for a in argv)}"


def tree_digest(path: Path) -> str:
    """sha256 over a file, or a folder's files (their paths, modes and bytes)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        name = file.name if file == path else file.relative_to(path).as_posix()
        digest.update(f"{name}\0{file.stat().st_mode & 0o777:o}\0".encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


class SshShell:
    """Runs the lab's commands on `lab.host` (see the module's docstring)."""

    python = "python3"  # the host's, for the few helpers kindlab runs there (core/daemons.py)

    def __init__(self, lab: Lab, *, verbose: bool = False, echo: Callable[[str], None] | None = None):
        import sys

        self.lab, self.host = lab, lab.host
        self.machine = lab.machine
        self.bin_dir = self.machine.bin_dir
        self.verbose = verbose
        self.echo = echo or (lambda line: print(line, file=sys.stderr))
        self._conn = None
        self._lock = threading.RLock()
        self._local = threading.local()
        self._far_home = ""
        self._which: dict[str, str] = {}
        self._pids: set[int] = set()
        self._spawned: list["RemoteProcess"] = []
        self._forwards: dict[tuple[str, int], "_Forward"] = {}
        self.uploaded = {"bytes": 0, "files": 0, "unchanged": 0}
        self.connections = 0  # made so far (a lost one is made again)

    # --- the connection ---------------------------------------------------------------------
    def open(self) -> "SshShell":
        """Connect now (a HostError names why not), so a wrong host stops the task before any step."""
        self._transport()
        return self

    def _connection(self):
        import fabric
        import paramiko

        config = fabric.Config(runtime_ssh_path=str(Path(self.lab.ssh_config).expanduser())) \
            if self.lab.ssh_config else fabric.Config()
        conn = fabric.Connection(self.host, config=config, connect_timeout=CONNECT_TIMEOUT_S,
                                 connect_kwargs={"password": None, "passphrase": None})
        client = conn.client
        known = [Path(p).expanduser() for p in (conn.ssh_config.get("userknownhostsfile") or "").split()]
        known = known or [Path("~/.ssh/known_hosts").expanduser()]
        for path in known:
            if path.is_file():
                client.load_system_host_keys(str(path))
        if self.lab.accept_new_host_key:  # OpenSSH's accept-new: a new key is added, a changed one refused
            known[0].parent.mkdir(parents=True, exist_ok=True)
            known[0].touch(exist_ok=True)
            client.load_host_keys(str(known[0]))
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        return conn, known[0]

    def _transport(self):
        """The live SSH transport, connecting (again) when there is none."""
        with self._lock:
            if self._conn is not None and self._conn.transport is not None and self._conn.transport.is_active():
                return self._conn.transport
            if self._conn is not None:  # lost: connect again
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
            conn, known = self._connection()
            try:
                conn.open()
            except Exception as exc:  # noqa: BLE001 - each way of failing becomes one sentence
                raise self._refusal(exc, conn, known) from None
            conn.transport.set_keepalive(5)
            self._conn = conn
            self.connections += 1
            if not self._far_home:
                self._far_home = conn.sftp().normalize(".")
            return conn.transport

    def _refusal(self, exc: Exception, conn, known: Path) -> Exception:
        import paramiko

        where = f"{self.host} ({conn.user}@{conn.host}:{conn.port})"
        if isinstance(exc, paramiko.BadHostKeyException):
            return HostError(f"host key mismatch for {where}: it does not match {known} (the host was "
                             "reinstalled, or someone is in between); check its fingerprint with its owner, then "
                             f"remove the old line with `ssh-keygen -R` and connect again")
        if isinstance(exc, paramiko.AuthenticationException):
            return HostError(f"authentication failed for {where}: no key of your SSH agent or ssh config was "
                             f"accepted for user {conn.user} (kindlab never asks for a password); name the right "
                             "user, or add your public key to that user's ~/.ssh/authorized_keys")
        text = str(exc)
        if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in text:
            return HostError(f"unknown host key for {where}: it is not in {known}; check its fingerprint and "
                             "add it (`ssh` to it once), or set kindlab.ssh.accept_new_host_key to trust it now")
        if isinstance(exc, socket.gaierror):
            return HostError(f"cannot resolve {conn.host} (from --host {self.host}): check the name or your "
                             "ssh config's HostName")
        if isinstance(exc, (ConnectionRefusedError, paramiko.ssh_exception.NoValidConnectionsError)):
            return HostError(f"connection refused by {where}: no SSH server listens there; check the host "
                             "and port, and that sshd runs")
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return HostError(f"no answer from {where} within {CONNECT_TIMEOUT_S}s: check the host, the port "
                             "and the network")
        return HostError(f"cannot connect to {where}: {text.splitlines()[0] if text else type(exc).__name__}")

    def _alive(self) -> bool:
        return bool(self._conn is not None and self._conn.transport is not None and self._conn.transport.is_active())

    def _lost(self, argv, why: str = "") -> CommandError:
        return CommandError(argv, None, f"the SSH connection to {self.host} was lost ({LOST}{why})")

    # --- commands ---------------------------------------------------------------------------
    def which(self, tool: str) -> str | None:
        if tool in self._which:
            return self._which[tool]
        found = self.run(["sh", "-c", 'command -v "$1"', "sh", tool], check=False, timeout=30).stdout.strip()
        if found:
            self._which[tool] = found
        return found or None

    def run(self, argv: Sequence, *, input: str | bytes | None = None, env: dict[str, str] | None = None,
            secrets: Iterable[str] = (), timeout: float | None = None, check: bool = True, cwd=None,
            stop: threading.Event | None = None) -> Result:
        """As LocalShell.run, on the host: ended (there too) by the step's deadline, `timeout` or `stop`."""
        if timeout is None and (held := deadlines.current()) is not None:
            timeout = max(MIN_COMMAND_S, held.left())
        argv = [str(a) for a in argv]
        secrets = tuple(secrets)
        if self.verbose:
            self.echo(f"$ [{self.host}] " + " ".join(mask_argv(argv, secrets)))
        try:
            chan = self._transport().open_session(timeout=CONNECT_TIMEOUT_S)
            chan.exec_command(command_line(argv, env=env, cwd=cwd, bin_dir=self.bin_dir))
        except HostError:
            raise
        except Exception as exc:  # noqa: BLE001 - the transport died under us
            raise self._lost(argv, f": {exc}") from None
        reading = _Reader(chan, self.echo if self.verbose else None, secrets)
        if input is not None:  # text, bytes, or a binary stream (docker save's output) sent as it is read
            data = input.encode() if isinstance(input, str) else input
            threading.Thread(target=_send, args=(chan, data), daemon=True).start()
        else:
            chan.shutdown_write()
        ends = time.monotonic() + timeout if timeout else None
        try:
            while not chan.exit_status_ready():
                if not self._alive():
                    raise self._lost(argv)
                if ends is not None and time.monotonic() >= ends:
                    raise CommandError(argv, None, f"timed out after {timeout:.0f}s", secrets, timed_out=True)
                if stop is not None and stop.is_set():
                    self._end(reading.pid)
                    chan.status_event.wait(5)
                    break
                chan.status_event.wait(0.1)
        except BaseException:  # its time is up, Ctrl-C: never leave the tool running there
            if self._alive():
                self._end(reading.pid)
            chan.close()
            raise
        code = chan.recv_exit_status() if chan.exit_status_ready() else -1
        out, err = reading.finish()
        chan.close()
        if code == -1 and not self._alive():
            raise self._lost(argv)
        result = Result(tuple(argv), code, out, err)
        if check and code != 0:
            if code == 127 and argv[0] in err and ("No such file" in err or "not found" in err):
                raise CommandError(argv, None, f"{argv[0]}: not found on {self.host}'s PATH (nor in kindlab's "
                                               f"tool cache there); run `invoke setup --host {self.host}`", secrets)
            raise CommandError(argv, code, _tail(err or out), secrets)
        return result

    def _end(self, pid: int | None, signal: str = "TERM") -> None:
        """End a command kindlab started on the host (and, if it lingers, kill it)."""
        if pid is None:
            return
        with contextlib.suppress(Exception):
            chan = self._transport().open_session(timeout=CONNECT_TIMEOUT_S)
            chan.exec_command(f"kill -{signal} {pid} 2>/dev/null; for i in 1 2 3 4 5 6 7 8 9 10; do "
                              f"kill -0 {pid} 2>/dev/null || exit 0; sleep 0.2; done; kill -KILL {pid} 2>/dev/null; true")
            chan.status_event.wait(5)
            chan.close()

    def spawn(self, argv: Sequence, *, env: dict[str, str] | None = None) -> "RemoteProcess":
        """A long-running command on the host (a port-forward); ended by close()."""
        argv = [str(a) for a in argv]
        try:
            chan = self._transport().open_session(timeout=CONNECT_TIMEOUT_S)
            chan.exec_command(command_line(argv, env=env, bin_dir=self.bin_dir))
        except HostError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._lost(argv, f": {exc}") from None
        chan.shutdown_write()
        proc = RemoteProcess(self, chan, argv)
        with self._lock:
            self._spawned.append(proc)
        return proc

    def close(self) -> None:
        """End what kindlab runs there (port-forwards), close the forwards here, then the connection."""
        with self._lock:
            spawned, self._spawned = self._spawned, []
            forwards, self._forwards = list(self._forwards.values()), {}
        for proc in spawned:
            proc.terminate()
        for forward in forwards:
            forward.close()
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None

    # --- files ------------------------------------------------------------------------------
    def far(self, path: str | PurePath) -> str:
        """An absolute path on the host (`~` is that user's home)."""
        text = str(path)
        self._transport()
        if text == "~":
            return self._far_home
        if text.startswith("~/"):
            return posixpath.join(self._far_home, text[2:])
        return text

    def _sftp(self):
        """An SFTP session of this thread's own (one session is not safe to share between steps side by side)."""
        transport = self._transport()
        held = getattr(self._local, "sftp", None)
        if held is None or held[0] is not transport:
            import paramiko
            held = (transport, paramiko.SFTPClient.from_transport(transport))
            self._local.sftp = held
        return held[1]

    def read_text(self, path) -> str | None:
        try:
            with self._sftp().open(self.far(path), "r") as handle:
                return handle.read().decode("utf-8", "replace")
        except OSError as exc:
            if _no_such_file(exc):
                return None
            raise

    def write_text(self, path, text: str) -> None:
        target = self.far(path)
        self.run(["mkdir", "-p", posixpath.dirname(target)])
        sftp = self._sftp()
        with sftp.open(target + ".kindlab-tmp", "w") as handle:
            handle.write(text.encode())
        sftp.posix_rename(target + ".kindlab-tmp", target)

    def exists(self, path) -> bool:
        try:
            self._sftp().stat(self.far(path))
            return True
        except OSError as exc:
            if _no_such_file(exc):
                return False
            raise

    def mkdir(self, path) -> None:
        self.run(["mkdir", "-p", self.far(path)])

    def mtime(self, path) -> float | None:
        try:
            return float(self._sftp().stat(self.far(path)).st_mtime)
        except OSError:
            return None

    def remove(self, path) -> None:
        self.run(["rm", "-rf", "--", self.far(path)])

    def get(self, path, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        self._sftp().get(self.far(path), str(local))

    def put(self, path: str | Path, to=None) -> str:
        """The file or folder `path` of this machine on the host, uploaded only when its content changed
        (its sha256 is kept beside it there); the path there. `to`: a file's exact place there instead
        (replaced whole, its mode kept; the caller decides whether it changed)."""
        local = Path(path).expanduser().resolve()
        if to is not None:
            dest = self.far(to)
            self.mkdir(posixpath.dirname(dest))
            sftp = self._sftp()
            sftp.put(str(local), dest + ".kindlab-tmp")
            sftp.chmod(dest + ".kindlab-tmp", local.stat().st_mode & 0o777)
            sftp.posix_rename(dest + ".kindlab-tmp", dest)
            self.uploaded["bytes"] += local.stat().st_size
            self.uploaded["files"] += 1
            return dest
        digest = tree_digest(local)
        name = f"{hashlib.sha256(str(local).encode()).hexdigest()[:12]}-{local.name}"
        dest = self.far(self.machine.home / UPLOADS / name)
        marker = dest + ".sha256"
        if self.read_text(marker) == digest:
            self.uploaded["unchanged"] += 1
            return dest
        self.run(["rm", "-rf", "--", dest, marker])
        self.run(["mkdir", "-p", dest if local.is_dir() else posixpath.dirname(dest)])
        if local.is_dir():
            data = io.BytesIO()
            with tarfile.open(fileobj=data, mode="w") as archive:
                for item in sorted(local.rglob("*")):
                    archive.add(item, arcname=item.relative_to(local).as_posix(), recursive=False)
            payload = data.getvalue()
            self.run(["tar", "-xf", "-", "-C", dest], input=payload)
            files = sum(1 for p in local.rglob("*") if p.is_file())
        else:
            self._sftp().put(str(local), dest)
            self._sftp().chmod(dest, local.stat().st_mode & 0o777)
            payload, files = b"", 1
            self.uploaded["bytes"] += local.stat().st_size
        self.uploaded["bytes"] += len(payload)
        self.uploaded["files"] += files
        self.write_text(marker, digest)
        return dest

    # --- ports ------------------------------------------------------------------------------
    def forward(self, port: int, far_host: str = "127.0.0.1", local_port: int | None = None) -> int:
        """Port `port` of the host (on its `far_host`) here on 127.0.0.1: on the same port where it is free
        (or `local_port`); the port here. Kept until close()."""
        from .portforward import free_port, port_free

        key = (far_host, int(port))
        with self._lock:
            if key in self._forwards and self._forwards[key].alive:
                return self._forwards[key].local_port
            wanted = local_port or port
            here = wanted if port_free(wanted) else free_port()
            self._forwards[key] = _Forward(self, far_host, int(port), here)
            return here

    def reach(self, url: str) -> str:
        """A URL of the host (127.0.0.1, localhost or the lab's listen address) as reached from here."""
        parts = urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost", "0.0.0.0", self.lab.listen_address) or not parts.port:
            return url
        far_host = "127.0.0.1" if parts.hostname in ("localhost", "0.0.0.0") else parts.hostname
        local = self.forward(parts.port, far_host)
        return urlunsplit(parts._replace(netloc=f"127.0.0.1:{local}"))

    def note(self, url: str) -> str:
        """How this machine reaches a URL of the lab: through SSH from the host's address."""
        parts = urlsplit(url)
        return f" (on {self.host}, forwarded here over SSH)" if parts.hostname else ""

    def free_port(self) -> int:
        """A port of the host's 127.0.0.1 to listen on, passed over when taken once picked (commands.free_port)."""
        out = self.run([self.python, "-c", _FREE_PORT], timeout=30).stdout
        return int(out.strip())

    def port_free(self, port: int, address: str = "127.0.0.1") -> bool:
        code = ("import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                "try: s.bind((sys.argv[1], int(sys.argv[2])))\nexcept OSError: sys.exit(1)")
        return self.run([self.python, "-c", code, address, str(port)], check=False, timeout=30).returncode == 0

    # --- processes (core/daemons.py) ---------------------------------------------------------------
    def proc_args(self, pid: int) -> list[str] | None:
        """The command line of a live (not zombie) process there, else None."""
        out = self.run([self.python, "-c", _PROC_ARGS, str(pid)], check=False, timeout=30)
        if out.returncode != 0:
            return None
        return out.stdout.split("\0")[:-1] if out.stdout else []

    def signal(self, pid: int, name: str) -> None:
        self.run(["kill", f"-{name}", str(pid)], check=False, timeout=30)

    def start_detached(self, argv: Sequence, log, env: dict | None = None, header: str = "") -> int:
        """Start `argv` there in its own session, `header` then its output appended to `log`; its pid."""
        out = self.run([self.python, "-c", _START, self.far(log), header, *map(str, argv)], env=env,
                       timeout=30).stdout
        return int(out.strip())


# Run on the host with its python3 (standard library only): a process's command line if it is alive and
# not a zombie (every thread looked at, as daemons.alive does); and a detached start.
_FREE_PORT = """import socket
for _ in range(20):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with socket.socket() as t:
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            t.bind(("127.0.0.1", port))
            break
        except OSError:
            pass
print(port)
"""
_PROC_ARGS = """import os, sys
pid = sys.argv[1]
try:
    states = [open(f"/proc/{pid}/task/{t}/stat").read().split(") ", 1)[1][0] for t in os.listdir(f"/proc/{pid}/task")]
    args = open(f"/proc/{pid}/cmdline", "rb").read()
except (OSError, IndexError):
    sys.exit(1)
if all(s == "Z" for s in states):
    sys.exit(1)
sys.stdout.write(args.decode(errors="replace"))
"""
_START = """import os, subprocess, sys
log, header, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
os.makedirs(os.path.dirname(log), exist_ok=True)
with open(log, "ab") as out:
    out.write(header.encode())
    out.flush()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
print(proc.pid)
"""


def _send(chan, data) -> None:
    with contextlib.suppress(Exception):
        if isinstance(data, (bytes, bytearray)):
            chan.sendall(data)
        else:
            for block in iter(lambda: data.read(1 << 20), b""):
                chan.sendall(block)
        chan.shutdown_write()


class _Reader:
    """Both streams of a command on the host, read as they come (the first line: its pid)."""

    def __init__(self, chan, echo: Callable[[str], None] | None, secrets: tuple = ()):
        self.chan, self.echo, self.secrets = chan, echo, secrets
        self.out, self.err = bytearray(), bytearray()
        self.pid: int | None = None
        self._got_pid = threading.Event()
        self._threads = [threading.Thread(target=self._pump, args=(chan.recv, self.out), daemon=True),
                         threading.Thread(target=self._pump, args=(chan.recv_stderr, self.err), daemon=True)]
        for t in self._threads:
            t.start()
        self._got_pid.wait(CONNECT_TIMEOUT_S)

    def _pump(self, receive, sink: bytearray) -> None:
        while True:
            try:
                block = receive(32768)
            except Exception:  # noqa: BLE001 - the channel closed
                break
            if not block:
                break
            sink.extend(block)
            if sink is self.out and self.pid is None and b"\n" in sink:
                first, _, rest = bytes(sink).partition(b"\n")
                if first.startswith(PID_MARK.encode()):
                    self.pid = int(first[len(PID_MARK):])
                    sink[:] = rest
                self._got_pid.set()
            if self.echo is not None:
                for line in block.decode("utf-8", "replace").splitlines():
                    if not line.startswith(PID_MARK):
                        self.echo("  " + mask_text(line, self.secrets))
        self._got_pid.set()

    def finish(self) -> tuple[str, str]:
        for t in self._threads:
            t.join(timeout=5)
        return self.out.decode("utf-8", "replace"), self.err.decode("utf-8", "replace")


class _Lines:
    """A stream of a remote command as LocalShell's children have them: iterate lines, or read() all."""

    def __init__(self):
        self._lines: list[str] = []
        self._done = threading.Event()
        self._cond = threading.Condition()
        self._partial = ""

    def feed(self, text: str) -> None:
        with self._cond:
            self._partial += text
            *whole, self._partial = self._partial.split("\n")
            self._lines += [line + "\n" for line in whole]
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            if self._partial:
                self._lines.append(self._partial)
                self._partial = ""
            self._done.set()
            self._cond.notify_all()

    def __iter__(self):
        index = 0
        while True:
            with self._cond:
                while index >= len(self._lines) and not self._done.is_set():
                    self._cond.wait(0.5)
                if index >= len(self._lines):
                    return
                line = self._lines[index]
            index += 1
            yield line

    def read(self) -> str:
        self._done.wait(5)
        with self._cond:
            return "".join(self._lines) + self._partial


class RemoteProcess:
    """A command kindlab keeps running on the host, as subprocess.Popen shows one (poll, terminate, streams)."""

    def __init__(self, shell: SshShell, chan, argv: list[str]):
        self.shell, self.chan, self.args = shell, chan, argv
        self.stdout, self.stderr = _Lines(), _Lines()
        self.pid: int | None = None
        self.returncode: int | None = None
        self._pid_seen = threading.Event()
        threading.Thread(target=self._pump, args=(chan.recv, self.stdout, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(chan.recv_stderr, self.stderr, False), daemon=True).start()
        self._pid_seen.wait(CONNECT_TIMEOUT_S)

    def _pump(self, receive, sink: _Lines, first: bool) -> None:
        buffer = b""
        while True:
            try:
                block = receive(32768)
            except Exception:  # noqa: BLE001
                break
            if not block:
                break
            if first and self.pid is None:
                buffer += block
                if b"\n" not in buffer:
                    continue
                head, _, block = buffer.partition(b"\n")
                if head.startswith(PID_MARK.encode()):
                    self.pid = int(head[len(PID_MARK):])
                self._pid_seen.set()
            sink.feed(block.decode("utf-8", "replace"))
        self._pid_seen.set()
        sink.end()

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        if self.chan.exit_status_ready():
            self.returncode = self.chan.recv_exit_status()
        elif self.chan.closed or not self.shell._alive():
            self.returncode = -1  # the connection went: it is gone for us
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        ends = time.monotonic() + timeout if timeout else None
        while self.poll() is None:
            if ends is not None and time.monotonic() > ends:
                import subprocess
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.chan.status_event.wait(0.1)
        return self.returncode

    def terminate(self) -> None:
        if self.poll() is None:
            self.shell._end(self.pid)
        with contextlib.suppress(Exception):
            self.chan.close()
        if self.returncode is None:
            self.returncode = -15

    kill = terminate


class _Forward:
    """A port of the host reached here: a listener on 127.0.0.1 whose connections go through SSH."""

    def __init__(self, shell: SshShell, far_host: str, far_port: int, local_port: int):
        self.shell, self.far_host, self.far_port, self.local_port = shell, far_host, far_port, local_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", local_port))
        self.sock.listen(64)
        self.alive = True
        threading.Thread(target=self._accept, daemon=True, name=f"kindlab-forward-{local_port}").start()

    def _accept(self) -> None:
        while self.alive:
            try:
                client, peer = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client, peer), daemon=True).start()

    def _serve(self, client: socket.socket, peer) -> None:
        try:
            chan = self.shell._transport().open_channel("direct-tcpip", (self.far_host, self.far_port), peer,
                                                        timeout=CONNECT_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - nothing listens there (yet), or the connection is down
            client.close()
            return
        try:
            while True:
                ready, _, _ = select.select([client, chan], [], [], 1.0)
                if client in ready:
                    data = client.recv(65536)
                    if not data:
                        break
                    chan.sendall(data)
                if chan in ready:
                    data = chan.recv(65536)
                    if not data:
                        break
                    client.sendall(data)
                if not self.alive:
                    break
        except Exception:  # noqa: BLE001 - either side went away
            pass
        finally:
            with contextlib.suppress(Exception):  # the connection itself may be gone
                chan.close()
            client.close()

    def close(self) -> None:
        self.alive = False
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it: the port is free again
        with contextlib.suppress(OSError):
            self.sock.close()


__all__ = ["SshShell", "HostError", "RemoteProcess", "quote", "command_line", "tree_digest"]

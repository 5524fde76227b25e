"""An SSH test host: Debian's OpenSSH server on a loopback port, as the "remote" machine of `--host`.

It runs as its own sshd (its own host key, config, log and pid), lets in one user made for the
tests, `kindlab-far`, with its own home (so its kindlab home, kubeconfig and tool cache are its own,
never this user's) and in the docker group (the far side shares this machine's Docker engine), by
one key made for the session. The client side gets an ssh config (a Host alias with the port, the
user, the key and a known_hosts file holding the test host's key), so nothing of the user's own
~/.ssh is read or written. The server's log records every session and every command it ran.
"""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
USER = "kindlab-far"
ALIAS = "kindlab-test-far"


def required() -> bool:
    """In CI the SSH tests must run: openssh-server missing fails instead of skipping."""
    flag = os.environ.get("KINDLAB_REQUIRE_SSH")
    if flag is not None:
        return flag not in ("", "0", "false")
    return bool(os.environ.get("CI"))


def missing() -> str | None:
    if not SSHD.exists():
        return "no OpenSSH server here: `invoke setup` installs Debian's openssh-server as root"
    if os.geteuid() != 0:
        return "the SSH test host makes a user of its own, which needs root"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is missing (Debian's openssh-client)"
    return None


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def far_user() -> pwd.struct_passwd:
    """The test host's user, made once (its home kept between sessions: its tool cache is reused)."""
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        _run("useradd", "--create-home", "--shell", "/bin/bash", USER)
        entry = pwd.getpwnam(USER)
    _run("usermod", "--password", "*", USER)  # no password at all, yet not locked (sshd refuses a locked one)
    if subprocess.run(["getent", "group", "docker"], capture_output=True).returncode == 0:
        _run("usermod", "--append", "--groups", "docker", USER)
    return entry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class TestHost:
    folder: Path
    port: int
    user: pwd.struct_passwd
    proc: subprocess.Popen | None = None

    @property
    def alias(self) -> str:
        return ALIAS

    @property
    def spec(self) -> str:
        return f"{USER}@127.0.0.1:{self.port}"

    @property
    def ssh_config(self) -> Path:
        return self.folder / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.folder / "known_hosts"

    @property
    def log(self) -> Path:
        return self.folder / "sshd.log"

    @property
    def home(self) -> Path:
        return Path(self.user.pw_dir)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def sessions(self) -> int:
        """Sessions the server accepted for the test user so far (its log's word)."""
        return self.log_text().count(f"Accepted publickey for {USER}")

    def connections(self) -> list[int]:
        """Pids of the server's processes serving connections now: every descendant of the listening sshd
        (its privileged child per connection, and that one's unprivileged child, which holds the socket)."""
        out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
        parent = {int(pid): int(ppid) for pid, ppid in (line.split() for line in out.splitlines())}
        found, grew = {self.proc.pid}, True
        while grew:
            more = {pid for pid, ppid in parent.items() if ppid in found} - found
            found |= more
            grew = bool(more)
        return sorted(found - {self.proc.pid})

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def start(folder: Path) -> TestHost:
    """The test host, listening on 127.0.0.1 only; its key in a known_hosts file of the tests' own."""
    user = far_user()
    folder.mkdir(parents=True, exist_ok=True)
    host_key, client_key = folder / "host_ed25519", folder / "client_ed25519"
    for key in (host_key, client_key):
        if not key.exists():
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    authorized = folder / "authorized_keys"
    authorized.write_text((folder / "client_ed25519.pub").read_text())
    port = free_port()
    host = TestHost(folder, port, user)
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\nStrictModes no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin no\nAllowUsers " + USER + "\n"
        "LogLevel VERBOSE\nAllowTcpForwarding yes\nSubsystem sftp internal-sftp\nMaxSessions 64\n"
        "MaxStartups 64\n")
    host.known_hosts.write_text(f"[127.0.0.1]:{port} {(folder / 'host_ed25519.pub').read_text().split(' ', 2)[0]} "
                                f"{(folder / 'host_ed25519.pub').read_text().split(' ', 2)[1]}\n")
    host.ssh_config.write_text(
        f"Host {ALIAS}\n  HostName 127.0.0.1\n  Port {port}\n  User {USER}\n  IdentityFile {client_key}\n"
        f"  IdentitiesOnly yes\n  UserKnownHostsFile {host.known_hosts}\n\n"
        f"Host 127.0.0.1\n  IdentityFile {client_key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {host.known_hosts}\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # the privilege separation folder sshd insists on
    host.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(folder / "sshd_config"), "-E", str(host.log)],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return host
        except OSError:
            if host.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {host.log.read_text(errors='replace')[-500:]}")
            time.sleep(0.1)
    host.stop()
    raise RuntimeError("sshd did not listen within 20 s")


@pytest.fixture(scope="session")
def ssh_host(tmp_path_factory):
    """The SSH test host, running for the session (its tool cache filled by `setup --host`)."""
    problem = missing()
    if problem:
        if required():
            pytest.fail(f"SSH test host: {problem}")
        pytest.skip(f"SSH test host: {problem}")
    folder = Path(tempfile.mkdtemp(prefix="kindlab-sshd-"))
    folder.chmod(0o755)  # sshd reads the authorized keys as the test host's user
    host = start(folder)
    yield host
    host.stop()
    shutil.rmtree(folder, ignore_errors=True)



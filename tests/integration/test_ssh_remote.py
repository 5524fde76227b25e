"""RemoteShell over a real SSH connection: Debian's sshd on 127.0.0.1, started by the test.

Skipped where no sshd binary is installed (`apt-get install openssh-server`).
"""
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from playbooks.core.commands import CommandError, RemoteShell

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
pytestmark = pytest.mark.skipif(SSHD is None or sys.platform == "win32",
                                reason="needs Debian's openssh-server (apt-get install openssh-server)")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ssh_target(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / name)], check=True)
    (tmp / "authorized_keys").write_text((tmp / "client_key.pub").read_text())
    os.chmod(tmp / "authorized_keys", 0o600)
    port = free_port()
    config = tmp / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {tmp / 'host_key'}
AuthorizedKeysFile {tmp / 'authorized_keys'}
PidFile {tmp / 'sshd.pid'}
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PermitUserEnvironment no
AcceptEnv *
""")
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not start: {proc.stdout.read()}")
            time.sleep(0.05)
    from fabric import Connection
    user = os.environ.get("USER") or __import__("getpass").getuser()
    conn = Connection("127.0.0.1", user=user, port=port,
                      connect_kwargs={"key_filename": str(tmp / "client_key"), "look_for_keys": False,
                                      "allow_agent": False})
    # a tool in the remote kindlab cache, to see the cache is first on PATH there too
    cache = tmp / "remote-bin"
    cache.mkdir()
    (cache / "kindlab-probe").write_text("#!/bin/sh\necho probe \"$@\"\n")
    (cache / "kindlab-probe").chmod(0o755)
    yield conn, cache
    conn.close()
    proc.terminate()
    proc.wait(timeout=10)


def test_arguments_reach_the_remote_tool_verbatim(ssh_target):
    conn, cache = ssh_target
    shell = RemoteShell(conn, str(cache))
    tricky = ["$(whoami)", "a b", "`id`", "; echo pwned", "it's"]
    res = shell.run([sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *tricky])
    import json
    assert json.loads(res.stdout) == tricky


def test_the_remote_cache_comes_first_on_path_and_secrets_go_through_stdin(ssh_target):
    conn, cache = ssh_target
    shell = RemoteShell(conn, str(cache))
    assert shell.run(["kindlab-probe", "hello"]).stdout.strip() == "probe hello"
    res = shell.run([sys.executable, "-c", "import sys; print(sys.stdin.read()[::-1])"], input="s3cret",
                    secrets=["s3cret"])
    assert res.stdout.strip() == "terc3s"


def test_a_remote_failure_is_a_command_error_with_the_tools_words(ssh_target):
    conn, cache = ssh_target
    shell = RemoteShell(conn, str(cache))
    with pytest.raises(CommandError) as err:
        shell.run([sys.executable, "-c", "import sys; sys.exit('no such cluster: lab')"])
    assert err.value.returncode == 1 and "no such cluster: lab" in str(err.value)

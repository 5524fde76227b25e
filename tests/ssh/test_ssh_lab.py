"""The lab on an SSH test host: commands run there (as its own user, from its own tool cache), the
Kubernetes client and the waits here through kindlab's tunnel, and every way a connection fails."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from playbooks import cluster, lab as lab_play, nginx
from playbooks.core.cli import make_context
from playbooks.core.runner import PlayFailed
from playbooks.core.steps import Step, change

from .. import sshd
from ..conftest import PlayRun

ROOT = Path(__file__).resolve().parents[2]


def far_processes(pattern: str) -> list[str]:
    """Command lines of the test host user's processes that mention `pattern`."""
    out = subprocess.run(["ps", "-u", sshd.USER, "-o", "args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if pattern in line]


def test_kwok_cluster_and_nginx_run_on_the_host_and_are_waited_for_here(far_lab, ssh_host):
    run = PlayRun(far_lab)
    accepted = ssh_host.sessions()
    try:
        run(cluster.delete_steps(far_lab))
        try:
            run(cluster.create_steps(far_lab))
        except PlayFailed:
            pytest.fail(f"cluster.create through SSH failed:\n{run.output}")
        # the control plane runs there, as the test host's user, from its own tool cache and kwokctl folder
        far_home = str(ssh_host.home)
        assert any(f"{far_home}/.kwok/clusters/kindlab-ssh" in line for line in far_processes("kube-apiserver"))
        assert not (Path.home() / ".kwok" / "clusters" / "kindlab-ssh").exists()  # nothing of it here
        assert (ssh_host.home / ".cache/kindlab/kubeconfigs/kwok-kindlab-ssh.yaml").exists()
        # its context here names the host, its API server on this machine's loopback (the tunnel)
        config = yaml.safe_load(far_lab.kubeconfig.read_text())
        context = f"kwok-kindlab-ssh@{sshd.ALIAS}"
        assert [c["name"] for c in config["contexts"]] == [context]
        assert config["clusters"][0]["cluster"]["server"].startswith("https://127.0.0.1:")
        assert ssh_host.sessions() > accepted and "Starting session: command for kindlab-far" in ssh_host.log_text()

        steps = nginx.deploy_steps(far_lab) + nginx.scale_steps(far_lab, 3) + nginx.verify_steps(far_lab)
        outcomes = run(steps)
        assert "3/3 ready endpoints" in run.output, run.output
        assert {o.status for o in outcomes} <= {"ok", "changed"}
        ctx = make_context(far_lab)  # the client here, through the tunnel it opens
        try:
            assert ctx.kube.apps.read_namespaced_deployment("nginx", "default").status.ready_replicas == 3
        finally:
            ctx.sh.close()

        again = run(cluster.create_steps(far_lab))  # a rerun changes nothing there
        assert [o.status for o in again] == ["ok"] * len(again), run.output

        # `forward`: the lab's context in the kubeconfig here answers kubectl here, through the tunnel
        stop, said = threading.Event(), []
        forwarding = threading.Thread(target=lab_play.forward, args=(far_lab, [], said.append, stop))
        forwarding.start()
        try:
            deadline = time.monotonic() + 20
            while "forwarding until Ctrl-C" not in said and time.monotonic() < deadline:
                time.sleep(0.1)
            here = subprocess.run([str(far_lab.tools_dir / "kubectl"), "--kubeconfig", str(far_lab.kubeconfig),
                                   "--context", context, "get", "deployment", "nginx", "-o",
                                   "jsonpath={.status.readyReplicas}"], capture_output=True, text=True, timeout=30)
            assert here.stdout == "3", here.stderr
        finally:
            stop.set()
            forwarding.join(10)
    finally:
        run(cluster.delete_steps(far_lab))
    assert not far_processes("kindlab-ssh"), "the cluster's processes outlived cluster.delete on the host"


def kindlab(args: list[str], tmp_path: Path, ssh_config: Path, **env) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    environ = {**os.environ, "KINDLAB_HOME": str(home), "KUBECONFIG": str(home / "kubeconfig"),
               "INVOKE_KINDLAB_SSH_CONFIG": str(ssh_config), **env}
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=environ, capture_output=True,
                          text=True, timeout=120)


def one_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stdout + result.stderr
    return lines[0]


def test_an_unknown_host_key_is_refused_unless_told_and_a_changed_one_always(ssh_host, tmp_path):
    config = tmp_path / "ssh_config"
    known = tmp_path / "known_hosts"
    config.write_text(ssh_host.ssh_config.read_text().replace(str(ssh_host.known_hosts), str(known)))
    refused = kindlab(["cluster.status", "--provider", "kwok", "--host", sshd.ALIAS], tmp_path, config)
    assert refused.returncode == 2
    assert "unknown host key for kindlab-test-far" in one_error(refused)
    assert not known.exists() or str(ssh_host.port) not in known.read_text()  # nothing was trusted

    told = kindlab(["cluster.status", "--provider", "kwok", "--host", sshd.ALIAS], tmp_path, config,
                   INVOKE_KINDLAB_SSH_ACCEPT_NEW_HOST_KEY="true")
    assert "host key" not in told.stdout + told.stderr
    assert f"[127.0.0.1]:{ssh_host.port}" in known.read_text()  # trusted now, as OpenSSH's accept-new

    other = tmp_path / "other_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, key = Path(f"{other}.pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{ssh_host.port} {kind} {key}\n")  # what a reinstalled (or forged) host shows
    mismatch = kindlab(["cluster.status", "--provider", "kwok", "--host", sshd.ALIAS], tmp_path, config,
                       INVOKE_KINDLAB_SSH_ACCEPT_NEW_HOST_KEY="true")
    assert mismatch.returncode == 2
    assert "host key mismatch for kindlab-test-far" in one_error(mismatch)


def test_a_wrong_user_or_port_is_one_line_and_exit_2(ssh_host, tmp_path):
    wrong_user = kindlab(["cluster.status", "--provider", "kwok", "--host", f"nobody@127.0.0.1:{ssh_host.port}"],
                         tmp_path, ssh_host.ssh_config)
    assert wrong_user.returncode == 2
    message = one_error(wrong_user)
    assert "authentication failed" in message and "user nobody" in message and "never asks for a password" in message
    assert "user nobody" in ssh_host.log_text().lower()  # the attempt reached the server, which refused it

    closed = sshd.free_port()
    refused = kindlab(["cluster.status", "--provider", "kwok", "--host", f"{sshd.USER}@127.0.0.1:{closed}"],
                      tmp_path, ssh_host.ssh_config)
    assert refused.returncode == 2
    assert "connection refused" in one_error(refused)


def test_a_connection_killed_mid_step_is_retried_within_the_step(far_lab, ssh_host):
    marker = ssh_host.home / "kindlab-retry-marker"
    marker.unlink(missing_ok=True)

    def slow(ctx):
        ctx.sh.run(["sh", "-c", 'echo attempt >> "$HOME/kindlab-retry-marker"; sleep 4'])
        return "ran to its end"

    accepted = ssh_host.sessions()

    def kill_when_started():
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in ssh_host.connections():  # the server's side of this connection: as a dropped link
            os.kill(pid, 9)

    killer = threading.Thread(target=kill_when_started)
    killer.start()
    run = PlayRun(far_lab)
    outcomes = run([Step("a far command", lambda ctx: change("run it"), slow)])
    killer.join()
    assert outcomes[0].status == "changed", run.output
    assert outcomes[0].detail == "ran to its end"
    assert marker.read_text().count("attempt") == 2  # the step ran again, over a new connection
    assert ssh_host.sessions() >= accepted + 2
    marker.unlink()

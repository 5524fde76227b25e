"""Ctrl-C while kind creates the cluster: kindlab and every process it started end, and no half-made
cluster is left for the next run to wait on. Pressed in a terminal, Ctrl-C reaches the whole foreground
process group; so it does here."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from playbooks.core.commands import LocalShell

from .conftest import CHECKOUT, free_ports, group, kind_containers

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = f"kindlab-interrupt-{CHECKOUT}"


def dangling_volumes(sh) -> set[str]:
    return set(sh.run(["docker", "volume", "ls", "--quiet", "--filter", "dangling=true"]).stdout.split())


@pytest.mark.skipif(sys.platform == "win32", reason="process groups and SIGINT")
def test_ctrl_c_during_kind_create_ends_every_child_and_leaves_no_half_made_cluster(real_lab, tmp_path):
    sh = LocalShell(real_lab.tools_dir)
    config = tmp_path / "kindlab.yaml"  # ports of its own: the shared cluster holds the lab's
    nginx_port, http_port, gateway_port = free_ports(3)
    config.write_text(yaml.safe_dump({"kindlab": {
        "home": str(tmp_path / "home"), "kubeconfig": str(tmp_path / "kubeconfig"), "cluster": CLUSTER,
        "offline": True, "ports": {"nginx": nginx_port, "http": http_port, "gateway": gateway_port}}}))
    volumes_before = dangling_volumes(sh)  # a kind node keeps /var in an anonymous volume
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "-f", str(config), "cluster.create"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        # mid-create: kind runs and its node container exists
        while not (any("kind create cluster" in args for _, args in group(proc.pid)) and kind_containers(sh, CLUSTER)):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "kind create never started"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 130, out
        assert "interrupted (Ctrl-C)" in out and "PLAY RECAP" in out
        assert group(proc.pid) == []  # kind, docker and every other child are gone
        assert kind_containers(sh, CLUSTER) == []  # the half-made cluster went with them
        listed = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True, env=sh.env()).stdout
        assert CLUSTER not in listed.split()
        assert dangling_volumes(sh) <= volumes_before  # nor its node's volume
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(["kind", "delete", "cluster", "--name", CLUSTER], capture_output=True, env=sh.env())

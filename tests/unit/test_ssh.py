"""The connection layer's own logic: where a lab's commands run, how they are quoted for a host's shell,
what an upload compares, and the `kindlab` program's --host."""
import subprocess
import sys
from pathlib import Path

import pytest

from playbooks.core.settings import Lab, SettingsError, lab_from_config
from playbooks.core.ssh import command_line, quote, tree_digest

ROOT = Path(__file__).resolve().parents[2]


def test_on_a_host_the_context_here_names_the_host_and_commands_use_the_hosts_own_kubeconfig(tmp_path):
    here = Lab(provider="kind", cluster="lab", kubeconfig=tmp_path / "config", home=tmp_path)
    assert here.context == "kind-lab" and here.machine.home == tmp_path
    assert here.cluster_flags() == ["--kubeconfig", str(tmp_path / "config"), "--context", "kind-lab"]
    far = Lab(provider="kind", cluster="lab", kubeconfig=tmp_path / "config", home=tmp_path, host="me@box:2222")
    assert far.context == "kind-lab@me@box:2222" and far.host_context == "kind-lab"
    assert far.cluster_flags("--kube-context") == ["--kubeconfig", "~/.cache/kindlab/kubeconfigs/kind-lab.yaml",
                                                   "--kube-context", "kind-lab"]
    assert str(far.machine.bin_dir) == "~/.cache/kindlab/bin"  # the host's own tool cache, never this one's


def test_a_host_comes_from_the_flag_the_setting_or_the_last_cluster_create(tmp_path):
    assert lab_from_config({"home": str(tmp_path), "host": "box"}).host == "box"
    assert lab_from_config({"home": str(tmp_path), "host": "box"}, host="me@other").host == "me@other"
    with pytest.raises(SettingsError, match="invalid host 'me@box; rm -rf'"):
        lab_from_config({"home": str(tmp_path)}, host="me@box; rm -rf")


def test_arguments_reach_the_hosts_shell_as_they_are_and_a_home_path_is_expanded_there():
    assert quote("a b'c") == "'a b'\"'\"'c'"
    assert quote("~/.cache/kindlab") == '"$HOME"/.cache/kindlab'
    line = command_line(["kubectl", "--kubeconfig", "~/k.yaml", "x; rm -rf /"], env={"A": "1 2"}, cwd="/tmp/d",
                        bin_dir="~/.cache/kindlab/bin")
    assert line == ("echo kindlab-pid $$; cd /tmp/d && PATH=\"$HOME\"/.cache/kindlab/bin:\"$PATH\" "
                    "exec env A='1 2' kubectl --kubeconfig \"$HOME\"/k.yaml 'x; rm -rf /'")
    run = subprocess.run(["sh", "-c", line.replace("cd /tmp/d && ", "").replace("kubectl", "printf '%s\\n'")],
                         capture_output=True, text=True, env={"HOME": "/h", "PATH": "/usr/bin:/bin"})
    assert run.stdout.splitlines()[1:] == ["--kubeconfig", "/h/k.yaml", "x; rm -rf /"]


def test_an_upload_is_compared_by_its_content_names_and_modes(tmp_path):
    folder = tmp_path / "chart"
    (folder / "templates").mkdir(parents=True)
    (folder / "Chart.yaml").write_text("name: demo\n")
    (folder / "templates" / "a.yaml").write_text("kind: ConfigMap\n")
    first = tree_digest(folder)
    (folder / "Chart.yaml").touch()  # a new mtime alone is no change
    assert tree_digest(folder) == first
    (folder / "templates" / "a.yaml").write_text("kind: Secret\n")
    assert tree_digest(folder) != first
    (folder / "templates" / "a.yaml").write_text("kind: ConfigMap\n")
    (folder / "templates" / "a.yaml").chmod(0o755)
    assert tree_digest(folder) != first


def test_the_kindlab_program_takes_host_as_a_core_flag_and_invoke_cannot():
    refused = subprocess.run([sys.executable, "-m", "playbooks.program", "--host", "nobody@127.0.0.1:1",
                              "cluster.status", "--provider", "kwok"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2
    assert "error: connection refused by nobody@127.0.0.1:1" in refused.stdout + refused.stderr
    plain = subprocess.run([sys.executable, "-m", "invoke", "--host", "box", "all"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert "No idea what '--host' is!" in plain.stdout + plain.stderr

"""The Docker runtime wrapper (tools/capdrop-runc): drops what the host cannot grant, then runs runc.

Run for real: the wrapper is built from tools/capdrop-runc, a stand-in `runc`
records how it was called, and setpriv takes capabilities out of the bounding
set the way some VMs do.
"""
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

from playbooks import toolchain

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux runtime wrapper"),
    pytest.mark.skipif(shutil.which("go") is None, reason="builds the wrapper with Go"),
]
ALL_CAPS = ["CAP_CHOWN", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_BPF"]


@pytest.fixture(scope="module")
def wrapper(tmp_path_factory):
    where = tmp_path_factory.mktemp("wrapper")
    toolchain.install("capdrop-runc", where, source="go", log=lambda m: None)
    return toolchain.tool_path("capdrop-runc", where)


@pytest.fixture
def fake_runc(tmp_path):
    """A `runc` on PATH that records its arguments and the spec it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    runc = bin_dir / "runc"
    runc.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys
        with open({str(tmp_path / 'calls.json')!r}, "a") as out:
            out.write(json.dumps(sys.argv[1:]) + "\\n")
        """))
    runc.chmod(runc.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def bundle(tmp_path, caps):
    path = tmp_path / "bundle"
    path.mkdir()
    spec = {"ociVersion": "1.0.2", "process": {"args": ["sh"], "capabilities": {
        "bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": caps}},
        "root": {"path": "rootfs"}}
    (path / "config.json").write_text(json.dumps(spec))
    return path


def run(wrapper, fake_runc, args, drop=()):
    argv = [str(wrapper), *args]
    if drop:
        if os.geteuid() != 0 or shutil.which("setpriv") is None:
            pytest.skip("dropping from the bounding set needs root and setpriv")
        argv = ["setpriv", "--bounding-set", ",".join(f"-{c[4:].lower()}" for c in drop), "--", *argv]
    env = dict(os.environ, PATH=f"{fake_runc}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)


def calls(tmp_path):
    return [json.loads(line) for line in (tmp_path / "calls.json").read_text().splitlines()]


def test_create_drops_capabilities_outside_the_bounding_set_and_runs_runc(wrapper, fake_runc, tmp_path):
    path = bundle(tmp_path, ALL_CAPS)
    args = ["--root", "/run/x", "--log", "/run/x/log.json", "--systemd-cgroup", "create", "--bundle", str(path), "c1"]
    result = run(wrapper, fake_runc, args, drop=("CAP_SYS_RESOURCE", "CAP_SYS_TIME"))
    assert result.returncode == 0, result.stderr
    caps = json.loads((path / "config.json").read_text())["process"]["capabilities"]
    for kept in caps.values():
        assert "CAP_SYS_RESOURCE" not in kept and "CAP_SYS_TIME" not in kept
    assert caps["bounding"] == ["CAP_CHOWN", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_BPF"]
    assert calls(tmp_path) == [args]  # runc got exactly the same arguments


def test_exec_filters_the_process_spec(wrapper, fake_runc, tmp_path):
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"args": ["ls"], "capabilities": {"bounding": ALL_CAPS, "effective": ALL_CAPS}}))
    args = ["--root", "/run/x", "exec", "--process", str(process), "--detach", "c1"]
    result = run(wrapper, fake_runc, args, drop=("CAP_SYS_RESOURCE",))
    assert result.returncode == 0, result.stderr
    assert "CAP_SYS_RESOURCE" not in json.loads(process.read_text())["capabilities"]["effective"]
    assert calls(tmp_path) == [args]


def test_a_complete_bounding_set_leaves_the_spec_untouched(wrapper, fake_runc, tmp_path):
    status = open("/proc/self/status").read()
    if "CapBnd:\t000001ffffffffff" not in status:
        pytest.skip("this host's bounding set is not complete")
    path = bundle(tmp_path, ALL_CAPS)
    before = (path / "config.json").read_text()
    assert run(wrapper, fake_runc, ["run", "-b", str(path), "c1"]).returncode == 0
    assert (path / "config.json").read_text() == before


def test_other_commands_pass_through_untouched(wrapper, fake_runc, tmp_path):
    result = run(wrapper, fake_runc, ["--version"])
    assert result.returncode == 0 and calls(tmp_path) == [["--version"]]
    version = subprocess.run([str(wrapper), "--kindlab-version"], capture_output=True, text=True).stdout
    assert toolchain.COMPONENTS["capdrop-runc"].version in version

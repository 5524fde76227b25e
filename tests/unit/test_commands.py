"""Commands: argument lists, secrets masked, failures named, remote via a Fabric stand-in."""
import sys

import pytest

from playbooks.core.commands import MASK, CommandError, LocalShell, mask_argv


def test_mask_argv_hides_secret_flag_values_and_known_secrets():
    argv = ["faas-cli", "login", "--password", "s3cret", "--token=abc", "--gateway", "http://x"]
    assert mask_argv(argv) == ("faas-cli", "login", "--password", MASK, f"--token={MASK}",
                               "--gateway", "http://x")
    assert mask_argv(["curl", "http://admin:hunter2@host"], ["hunter2"]) == ("curl", f"http://admin:{MASK}@host")


def test_local_run_passes_arguments_verbatim_without_a_shell(tmp_path):
    shell = LocalShell()
    tricky = ["$(whoami)", "a b", "`id`", "; rm -rf /", "|", "%PATH%"]
    res = shell.run([sys.executable, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", *tricky])
    import json
    assert json.loads(res.stdout) == tricky


def test_secret_via_stdin_never_in_error_message():
    shell = LocalShell()
    with pytest.raises(CommandError) as err:
        shell.run([sys.executable, "-c",
                   "import sys; pw=sys.stdin.read(); print('login failed for', pw, file=sys.stderr); sys.exit(3)"],
                  input="hunter2", secrets=["hunter2"])
    text = str(err.value)
    assert "hunter2" not in text and MASK in text
    assert "exited 3" in text and "login failed" in text


def test_failure_names_command_and_last_lines_of_output():
    shell = LocalShell()
    code = "import sys\nfor i in range(50): print('line', i, file=sys.stderr)\nsys.exit(1)"
    with pytest.raises(CommandError) as err:
        shell.run([sys.executable, "-c", code])
    msg = str(err.value)
    assert "line 49" in msg and "line 10" not in msg  # only the tail
    assert err.value.returncode == 1


def test_missing_tool_says_how_to_install(tmp_path):
    shell = LocalShell(tmp_path)
    with pytest.raises(CommandError, match="invoke tools.install"):
        shell.run(["kindlab-no-such-tool-xyz", "version"])


def test_bin_dir_comes_first_on_path(tmp_path):
    fake = tmp_path / "kubectl"
    fake.write_text("#!/bin/sh\necho fake-kubectl \"$@\"\n")
    fake.chmod(0o755)
    if sys.platform == "win32":
        pytest.skip("shell script stand-in")
    res = LocalShell(tmp_path).run(["kubectl", "version"])
    assert res.stdout.strip() == "fake-kubectl version"


def test_verbose_streams_lines_live_and_keeps_output(tmp_path):
    lines = []
    shell = LocalShell(verbose=True, echo=lines.append)
    res = shell.run([sys.executable, "-c", "print('hello'); print('pw=s3cret')"], secrets=["s3cret"])
    assert res.stdout.splitlines() == ["hello", "pw=s3cret"]
    assert any("hello" in l for l in lines) and not any("s3cret" in l for l in lines)


def test_a_picked_port_taken_before_it_was_checked_is_passed_over(monkeypatch):
    """CI, with the kwok lane beside the kind lane: a port the kernel called free was taken (its range is
    also the one outgoing connections get) before kubectl could listen on it. The pick passes it over."""
    import socket

    from playbooks.core import commands
    from playbooks.core.commands import LocalShell, free_port, port_free

    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        offered = [busy, busy, free_port()]
        monkeypatch.setattr(commands, "_kernel_port", lambda: offered.pop(0))
        port = LocalShell().free_port()
        assert port != busy and port_free(port) and offered == []

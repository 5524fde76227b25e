"""tests/ssh: the lab on an SSH test host (tests/sshd.py), its tools sent there by `setup --host`."""
from __future__ import annotations

import pytest

from playbooks import toolchain, tools
from playbooks.core.settings import KwokSettings, Lab

from .. import sshd
from ..conftest import PlayRun, testbed_required, unavailable


@pytest.fixture(scope="session")
def far_lab(ssh_host, tmp_path_factory) -> Lab:
    """A kwok lab on the test host (by its ssh config alias); this side's home and kubeconfig temporary."""
    bin_dir = toolchain.default_bin_dir()
    missing = [n for n in (*toolchain.TESTBED_TOOLS, "kubectl") if not toolchain.is_current(n, bin_dir)]
    if missing:
        message = f"the kwok testbed is not installed here ({', '.join(missing)}): run `invoke tools.install --testbed`"
        unavailable(message, testbed_required())
    home = tmp_path_factory.mktemp("kindlab-here")
    lab = Lab(provider="kwok", cluster="kindlab-ssh", host=sshd.ALIAS, ssh_config=str(ssh_host.ssh_config),
              kubeconfig=home / "kubeconfig", home=home, bin_dir=bin_dir, timeout=60, retry_attempts=4,
              retry_initial=0.5, kwok=KwokSettings(nodes=1, ready_delay_ms=300))
    PlayRun(lab)(tools.host_steps(lab, list(tools.TEST_TOOLS), "auto"))  # its tools, from this machine's cache
    return lab

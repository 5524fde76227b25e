"""Shared fixtures: the kwok testbed cluster (one per test session) and a play runner."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from playbooks import cluster, toolchain
from playbooks.core.cli import make_context
from playbooks.core.runner import PlayFailed, Reporter, run_play
from playbooks.core.settings import KwokSettings, Lab

from .sshd import ssh_host  # noqa: F401 (the SSH test host: one per session, for tests/ssh and tests/kind)

# One testbed per checkout, so test runs in two checkouts side by side never
# delete each other's cluster (a rerun in the same checkout replaces its own).
TESTBED_NAME = os.environ.get("KINDLAB_TESTBED_NAME") or \
    f"kindlab-it-{hashlib.sha256(str(Path(__file__).resolve().parent).encode()).hexdigest()[:6]}"


# Source archives no package registry serves (kindlab.sources): the project's shared sources beside the
# checkout, unless INVOKE_KINDLAB_SOURCES_<GROUP> (what .ci/run and a user's shell set) names a folder.
SHARED_SOURCES = Path(__file__).resolve().parents[2] / "shared" / "sources"


def source_folders() -> dict[str, str]:
    """kindlab.sources for the tests: group -> folder, for the groups whose folder exists."""
    from playbooks.sources import GROUPS

    found = {}
    for group in GROUPS:
        folder = os.environ.get(f"INVOKE_KINDLAB_SOURCES_{group.upper()}") or str(SHARED_SOURCES / group)
        if Path(folder).is_dir():
            found[group] = folder
    return found


# Two lanes side by side (pytest-xdist: `-n 2` in pyproject.toml): the real clusters (tests/kind, tests/ssh,
# tests/e2e: Docker, kind, the SSH host) in one worker, everything else (unit tests, the kwok testbed) in the
# other. Each lane's session fixtures (the SSH host, the kwok testbed) start once, in its own worker, and no
# test of one lane touches the other's. The clusters' lane waits on image loads and pods far more than it
# computes, so the whole run takes about as long as that lane alone. (A scheduler of our own, not
# `--dist loadgroup`: pytest 9 ignores the test id xdist 3.8's groups are written into.)
CLUSTER_LANE = ("kind", "ssh", "e2e")


def lane(nodeid: str) -> str:
    """The lane of a test, from its id (tests/<folder>/...)."""
    parts = nodeid.replace("\\", "/").split("/")
    return "clusters" if len(parts) > 1 and parts[1] in CLUSTER_LANE else "testbed"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class Lanes(LoadScopeScheduling):
        """Each lane one unit of work, run in order on one worker."""

        def _split_scope(self, nodeid: str) -> str:
            return lane(nodeid)

    return Lanes(config, log)


def pytest_terminal_summary(terminalreporter):
    """One line in the log saying whether the real-cluster tests ran, so CI's log shows it (here, not in
    tests/kind's conftest: with pytest-xdist the controller that prints the summary collects nothing)."""
    counts: dict[str, int] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "nodeid", "").replace("\\", "/").startswith("tests/kind/") and \
                    getattr(report, "when", "call") in ("call", "setup"):
                if outcome == "passed" and report.when != "call":
                    continue
                counts[outcome] = counts.get(outcome, 0) + 1
    if counts:
        summary = ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
        terminalreporter.write_line(f"real kind cluster tests (tests/kind): {summary}")


def testbed_required() -> bool:
    """In CI the testbed must run: a missing binary fails instead of skipping."""
    flag = os.environ.get("KINDLAB_REQUIRE_TESTBED")
    if flag is not None:
        return flag not in ("", "0", "false")
    return bool(os.environ.get("CI"))


def unavailable(message: str, required: bool):
    """A prerequisite is missing: where it is required (CI) the test fails, elsewhere it skips, naming the fix."""
    if required:
        pytest.fail(message)
    pytest.skip(message)


class PlayRun:
    """Runs a play against a lab and keeps what it printed."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.output = ""

    def __call__(self, steps, check_mode=False, lab=None):
        out = io.StringIO()
        lab = lab or self.lab
        ctx = make_context(lab, Reporter(Console(file=out, width=250, highlight=False), live=False))
        try:
            return run_play("test", steps, ctx, check_mode=check_mode)
        finally:
            ctx.sh.close()
            self.output = out.getvalue()


@pytest.fixture(scope="session")
def testbed_lab(tmp_path_factory) -> Lab:
    bin_dir = toolchain.default_bin_dir()
    missing = [n for n in (*toolchain.TESTBED_TOOLS, "kubectl") if not toolchain.is_current(n, bin_dir)]
    if missing:
        message = (f"kwok testbed binaries missing or not at the pinned version in {bin_dir}: "
                   f"{', '.join(missing)}; run `invoke tools.install --testbed`")
        unavailable(message, testbed_required())
    home = tmp_path_factory.mktemp("kindlab-home")
    return Lab(provider="kwok", cluster=TESTBED_NAME, kubeconfig=home / "kubeconfig", home=home,
               bin_dir=bin_dir, timeout=60, retry_attempts=3, retry_initial=0.5,
               kwok=KwokSettings(nodes=2, cpu="4", memory="8Gi", ready_delay_ms=500))


@contextlib.contextmanager
def kwok_cluster(lab: Lab, what: str):
    """A fresh kwok cluster for `lab` (a leftover of an interrupted session replaced), deleted afterwards."""
    run = PlayRun(lab)
    try:
        run(cluster.delete_steps(lab))
        run(cluster.create_steps(lab))
    except PlayFailed:
        pytest.fail(f"{what} did not start:\n{run.output}")
    try:
        yield lab
    finally:
        run(cluster.delete_steps(lab))


@pytest.fixture(scope="session")
def testbed(testbed_lab) -> Lab:
    """A running kwok cluster with Ready simulated nodes, deleted at the end of the session."""
    with kwok_cluster(testbed_lab, "the kwok testbed") as lab:
        yield lab


@pytest.fixture
def play(testbed) -> PlayRun:
    return PlayRun(testbed)


@pytest.fixture
def kube(testbed):
    return make_context(testbed).kube

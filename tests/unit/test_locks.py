"""The per-cluster lock and the kubeconfig lock, between processes started at the same instant.

Each racer is a separate Python process that imports kindlab, says it is
ready and waits for a shared start signal, so all of them reach the lock
together: the case the old lock lost.
"""
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from playbooks.core import kubeconfig
from playbooks.core.cli import cluster_lock, lock_path
from playbooks.core.settings import Lab

REPO = Path(__file__).resolve().parents[2]
RACERS = 20

TAKE_CLUSTER_LOCK = r"""
import sys, time
from pathlib import Path
from invoke.exceptions import Exit
from playbooks.core.cli import cluster_lock
from playbooks.core.settings import Lab

home, me = Path(sys.argv[1]), sys.argv[2]
(home / f"ready-{me}").touch()
while not (home / "go").exists():
    time.sleep(0.001)
try:
    with cluster_lock(Lab(provider="kwok", cluster="race", home=home)):
        with open(home / "inside", "a") as log:
            log.write(f"{me}\n")
        while not (home / "release").exists():
            time.sleep(0.01)
except Exit as exc:
    print(exc.message, file=sys.stderr)
    sys.exit(exc.code)
"""

MERGE_CONTEXTS = r"""
import sys, time
from pathlib import Path
from playbooks.core import kubeconfig

home, me, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
(home / f"ready-{me}").touch()
while not (home / "go").exists():
    time.sleep(0.001)
for i in range(count):
    name = f"ctx-{me}-{i}"
    kubeconfig.merge(home / "kubeconfig", {
        "clusters": [{"name": name, "cluster": {"server": f"https://127.0.0.1:{6000 + i}"}}],
        "users": [{"name": name, "user": {"token": "x"}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}]})
"""


@pytest.fixture
def race(tmp_path):
    """race(script, *args, until=...): start RACERS copies of `script`, release them at once and
    return them once `until(procs)` holds (by default: all ended). Any still running at the end are killed."""
    started: list[subprocess.Popen] = []

    def run(script: str, *args: str, until=None, deadline_s: float = 180) -> list[subprocess.Popen]:
        procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(i), *args], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(RACERS)]
        started.extend(procs)
        deadline = time.monotonic() + deadline_s
        while len(list(tmp_path.glob("ready-*"))) < RACERS:
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.05)
        (tmp_path / "go").touch()
        until = until or (lambda procs: all(p.poll() is not None for p in procs))
        while not until(procs):
            assert time.monotonic() < deadline, "racers did not finish"
            time.sleep(0.05)
        return procs

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_twenty_runs_started_at_once_take_the_cluster_lock_exactly_once(tmp_path, race):
    inside = tmp_path / "inside"

    def settled(procs):  # every racer either holds the lock or has been refused
        entered = inside.read_text().split() if inside.exists() else []
        return len(entered) + sum(p.poll() is not None for p in procs) >= RACERS

    procs = race(TAKE_CLUSTER_LOCK, until=settled)
    entered = inside.read_text().split()
    (tmp_path / "release").touch()
    results = [(p.wait(timeout=60), p.communicate()[1]) for p in procs]
    assert len(entered) == 1, f"{len(entered)} runs held the lock at once"
    winner = procs[int(entered[0])]
    refused = [err for code, err in results if code == 3]
    assert len(refused) == RACERS - 1 and results[int(entered[0])][0] == 0, results
    # each refusal names the run that holds the lock, never a pid it could not read
    assert all(f"another kindlab run (pid {winner.pid}," in err for err in refused), refused
    assert not lock_path(Lab(provider="kwok", cluster="race", home=tmp_path)).exists()  # its owner removed it


def test_a_refused_run_leaves_the_holders_lock_in_place(tmp_path):
    lab = Lab(provider="kwok", cluster="held", home=tmp_path)
    probe = ("import sys; from pathlib import Path; from invoke.exceptions import Exit\n"
             "from playbooks.core.cli import cluster_lock; from playbooks.core.settings import Lab\n"
             "try:\n    with cluster_lock(Lab(provider='kwok', cluster='held', home=Path(sys.argv[1]))): pass\n"
             "except Exit as e: sys.exit(e.code)\n")
    with cluster_lock(lab):
        note = lock_path(lab).read_text()
        for _ in range(3):  # refused every time: the first refusal did not remove or replace the lock
            assert subprocess.run([sys.executable, "-c", probe, str(tmp_path)], cwd=REPO).returncode == 3
        assert lock_path(lab).read_text() == note
    assert subprocess.run([sys.executable, "-c", probe, str(tmp_path)], cwd=REPO).returncode == 0


def test_a_lock_left_by_a_killed_run_is_free(tmp_path):
    lab = Lab(provider="kwok", cluster="killed", home=tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path\n"
         "from playbooks.core.cli import cluster_lock; from playbooks.core.settings import Lab\n"
         "with cluster_lock(Lab(provider='kwok', cluster='killed', home=Path(sys.argv[1]))):\n"
         "    print('held', flush=True); time.sleep(600)\n", str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.kill()  # no cleanup runs: the file stays, naming a dead pid
        holder.wait()
        assert lock_path(lab).exists()
        with cluster_lock(lab):
            assert lock_path(lab).read_text().startswith(f"{__import__('os').getpid()}\n")
    finally:
        holder.kill()


def test_twenty_processes_merging_at_once_keep_every_context(tmp_path, race):
    per_process = 10
    procs = race(MERGE_CONTEXTS, str(per_process))
    assert all(p.returncode == 0 for p in procs), [p.communicate()[1] for p in procs if p.returncode]
    config = yaml.safe_load((tmp_path / "kubeconfig").read_text())
    names = {c["name"] for c in config["contexts"]}
    want = {f"ctx-{me}-{i}" for me in range(RACERS) for i in range(per_process)}
    assert names == want, f"lost {len(want - names)} of {len(want)} contexts"
    assert {c["name"] for c in config["clusters"]} == want and {u["name"] for u in config["users"]} == want
    assert not list(tmp_path.glob("*.lock")) and not list(tmp_path.glob(".kindlab-kubeconfig-*"))


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need a privilege there")
def test_a_symlinked_kubeconfig_stays_a_symlink(tmp_path):
    real = tmp_path / "dotfiles" / "kubeconfig"
    real.parent.mkdir()
    real.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [],
                                    "contexts": [], "current-context": "mine"}))
    link = tmp_path / "config"
    link.symlink_to(real)
    entries = {"clusters": [{"name": "c", "cluster": {"server": "https://x"}}], "users": [{"name": "u", "user": {}}],
               "contexts": [{"name": "kwok-a", "context": {"cluster": "c", "user": "u"}}]}
    kubeconfig.merge(link, entries)
    assert link.is_symlink() and kubeconfig.has_context(real, "kwok-a")
    assert yaml.safe_load(real.read_text())["current-context"] == "mine"
    assert kubeconfig.remove_context(link, "kwok-a") and link.is_symlink() and not kubeconfig.has_context(real, "kwok-a")

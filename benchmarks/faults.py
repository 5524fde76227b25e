"""Faults and concurrency, measured: the cluster lock, kubeconfig merges, a stalled API server, repairs.

Prints:
  - lock: trials of 20 processes taking one cluster's lock at the same instant, and how many
    trials had exactly one holder;
  - merges: trials of 2 processes merging different contexts into one kubeconfig at the same
    instant (and one trial of 20 processes x 10 merges), and how many kept every context;
  - stall: seconds from an API server's SIGSTOP (for 20 s) to the failure of a wait with
    timeout 3 s, called directly and through `invoke nginx.scale --timeout 3`;
  - repair: seconds `invoke cluster.create` takes after kill -9 of the controller-manager, of
    the API server, and after a 20 s SIGSTOP of the API server (which ends the controller-manager
    and the scheduler: "leaderelection lost").

The cluster parts use a kwok cluster of their own, made and deleted here.

    python benchmarks/faults.py [--lock-trials 20] [--merge-trials 200] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playbooks import cluster, nginx, toolchain  # noqa: E402
from playbooks.core.cli import make_context  # noqa: E402
from playbooks.core.runner import PlayFailed, Reporter, run_play  # noqa: E402
from playbooks.core.settings import KwokSettings, Lab  # noqa: E402
from rich.console import Console  # noqa: E402
from tests.integration.test_faults_kwok import killed, paused  # noqa: E402
from tests.unit.test_locks import MERGE_CONTEXTS, TAKE_CLUSTER_LOCK  # noqa: E402


def race(script: str, home: Path, racers: int, *args: str, settled=None) -> list[subprocess.Popen]:
    """Start `racers` copies of a tests.unit.test_locks script and release them at once."""
    procs = [subprocess.Popen([sys.executable, "-c", script, str(home), str(i), *args], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(racers)]
    while len(list(home.glob("ready-*"))) < racers:
        time.sleep(0.02)
    (home / "go").touch()
    settled = settled or (lambda procs: all(p.poll() is not None for p in procs))
    while not settled(procs):
        time.sleep(0.02)
    return procs


def lock_trial(racers: int = 20) -> int:
    """How many of `racers` runs held the lock at once."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        inside = home / "inside"

        def settled(procs):  # each racer holds the lock or was refused
            held = len(inside.read_text().split()) if inside.exists() else 0
            return held + sum(p.poll() is not None for p in procs) >= racers

        procs = race(TAKE_CLUSTER_LOCK, home, racers, settled=settled)
        held = len(inside.read_text().split())
        (home / "release").touch()
        for p in procs:
            p.wait()
        return held


def merge_trial(racers: int, each: int) -> tuple[int, int]:
    """(contexts kept, contexts merged) when `racers` processes merge `each` contexts at once."""
    import yaml
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        race(MERGE_CONTEXTS, home, racers, str(each))
        config = yaml.safe_load((home / "kubeconfig").read_text())
        return len(config["contexts"]), racers * each


def play(lab: Lab, steps, log) -> float:
    ctx = make_context(lab, Reporter(Console(file=log, width=200), live=False))
    start = time.monotonic()
    try:
        run_play("bench", steps, ctx)
    finally:
        ctx.sh.close()
    return time.monotonic() - start


def invoke(lab: Lab, *args: str) -> tuple[float, str]:
    env = {**os.environ, "KINDLAB_HOME": str(lab.home), "KUBECONFIG": str(lab.kubeconfig)}
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "invoke", *args, "--provider", "kwok", "--name", lab.cluster],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    return time.monotonic() - start, out.stdout + out.stderr


def stall_to_failure_direct(lab: Lab, log) -> float:
    kube = make_context(lab).kube
    with paused(lab, "kube-apiserver", most_s=20) as resumed:
        start = time.monotonic()
        try:
            kube.wait_deployment("default", "nginx", timeout=3)
        except Exception as exc:  # noqa: BLE001 - the failure is what is measured
            print(f"    {exc}", file=log)
        took = time.monotonic() - start
        assert not resumed.is_set()
    return took


def stall_to_failure_invoke(lab: Lab, log) -> float:
    """Stall the API server once `nginx.scale --timeout 3` is inside its wait; seconds from stall to exit."""
    env = {**os.environ, "KINDLAB_HOME": str(lab.home), "KUBECONFIG": str(lab.kubeconfig)}
    play(lab, nginx.scale_steps(lab, 1), log)
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "nginx.scale", "--replicas", "3", "--timeout", "3",
                             "--provider", "kwok", "--name", lab.cluster], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # the wait prints its progress once it starts
        lines.append(line)
        if "pods Ready" in line:
            break
    with paused(lab, "kube-apiserver", most_s=20):
        start = time.monotonic()
        lines += proc.stdout.readlines()
        proc.wait()
        took = time.monotonic() - start
    print("".join(lines), file=log)
    return took


def repair(lab: Lab, log, breaking) -> float:
    breaking()
    took, out = invoke(lab, "cluster.create")
    print(out, file=log)
    if "failed=0" not in out:
        raise SystemExit(f"cluster.create did not repair the cluster:\n{out}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock-trials", type=int, default=20)
    parser.add_argument("--merge-trials", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    once = sum(lock_trial() == 1 for _ in range(args.lock_trials))
    print(f"lock:   {once}/{args.lock_trials} trials of 20 runs at once had exactly one holder")
    pairs = [merge_trial(2, 1) for _ in range(args.merge_trials)]
    kept = sum(k == n for k, n in pairs)
    big = merge_trial(20, 10)
    print(f"merges: {kept}/{args.merge_trials} trials of 2 merges at once kept both contexts; "
          f"20 processes x 10 merges kept {big[0]}/{big[1]}")

    home = Path(tempfile.mkdtemp(prefix="kindlab-faults-"))
    lab = Lab(provider="kwok", cluster="kindlab-faults-bench", home=home, kubeconfig=home / "kubeconfig",
              bin_dir=toolchain.default_bin_dir(), timeout=120, kwok=KwokSettings(nodes=1, ready_delay_ms=60000))
    log = open(home / "plays.log", "w")
    print(f"        (play logs in {home / 'plays.log'})")
    try:
        play(lab, cluster.delete_steps(lab) + cluster.create_steps(lab), log)
        play(lab, nginx.deploy_steps(lab), log)
        direct, through_invoke = [], []
        for _ in range(args.rounds):
            direct.append(stall_to_failure_direct(lab, log))
            play(lab, cluster.create_steps(lab), log)
            through_invoke.append(stall_to_failure_invoke(lab, log))
            play(lab, cluster.create_steps(lab), log)
        med = statistics.median
        print(f"stall:  20 s SIGSTOP, wait timeout 3 s: failed after median {med(direct):.1f}s "
              f"({', '.join(f'{t:.1f}' for t in direct)}) called directly; "
              f"`invoke nginx.scale --timeout 3` exited {med(through_invoke):.1f}s after the stall began "
              f"({', '.join(f'{t:.1f}' for t in through_invoke)})")

        def kill(name):
            def breaking():
                with killed(lab, name):
                    time.sleep(1)
            return breaking

        def stall_20s():
            with paused(lab, "kube-apiserver", most_s=20) as resumed:
                resumed.wait()

        for what, breaking in (("kill -9 controller-manager", kill("kube-controller-manager")),
                               ("kill -9 API server", kill("kube-apiserver")),
                               ("20 s SIGSTOP of the API server", stall_20s)):
            times = [repair(lab, log, breaking) for _ in range(args.rounds)]
            print(f"repair: after {what}: `invoke cluster.create` took median {med(times):.1f}s "
                  f"({', '.join(f'{t:.1f}' for t in times)})")
    finally:
        try:
            play(lab, cluster.delete_steps(lab), log)
        except PlayFailed:
            pass
        log.close()


if __name__ == "__main__":
    main()

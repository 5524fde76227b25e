"""`invoke all` on the kwok testbed with the fixture charts: cold, converged rerun, concurrent vs sequential.

Prints, for a fresh simulated cluster each time:
  - a cold run with monitoring, faas and ray installed side by side (as `invoke all` does);
  - a converged rerun right after it (wall time, steps changed);
  - a cold run of the same steps one after another, and the ratio of the two cold runs.

    python benchmarks/rerun.py [--rounds 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from playbooks import cluster, toolchain  # noqa: E402
from playbooks import lab as lab_play, parts as parts_play  # noqa: E402
from playbooks.core.cli import make_context  # noqa: E402
from playbooks.core.runner import Reporter, run_play  # noqa: E402
from playbooks.core.settings import KwokSettings, Lab  # noqa: E402

CHARTS = ROOT / "tests" / "fixtures" / "charts"
OFFLINE = (("faas", str(CHARTS / "openfaas-stub")), ("kuberay-operator", str(CHARTS / "kuberay-operator-stub")),
           ("monitoring", str(CHARTS / "kps-stub")), ("ray-cluster", str(CHARTS / "ray-cluster-stub")))


def timed_run(lab: Lab, steps, log) -> tuple[float, list]:
    ctx = make_context(lab, Reporter(Console(file=log, width=200), live=False))
    start = time.monotonic()
    try:
        outcomes = run_play("bench", steps, ctx)
    finally:
        ctx.sh.close()
    return time.monotonic() - start, outcomes


def fresh(lab: Lab, log) -> None:
    timed_run(lab, cluster.delete_steps(lab), log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="kindlab-rerun-"))
    lab = Lab(provider="kwok", cluster="kindlab-rerun", home=home, kubeconfig=home / "kubeconfig",
              bin_dir=toolchain.default_bin_dir(), timeout=120, charts=OFFLINE,
              kwok=KwokSettings(nodes=2, ready_delay_ms=1000))
    parts = parts_play.choose()
    log = open(home / "plays.log", "w")
    cold_concurrent, cold_sequential, reruns, changed = [], [], [], []
    try:
        for _ in range(args.rounds):
            fresh(lab, log)
            took, _ = timed_run(lab, lab_play.all_steps(lab, parts), log)
            cold_concurrent.append(took)
            took, outcomes = timed_run(lab, lab_play.all_steps(lab, parts), log)
            reruns.append(took)
            changed.append(sum(o.status == "changed" and not o.action for o in outcomes))
            fresh(lab, log)
            sequential = [replace(s, needs=None) for s in lab_play.all_steps(lab, parts)]
            took, _ = timed_run(lab, sequential, log)
            cold_sequential.append(took)
    finally:
        fresh(lab, log)
        log.close()
    med = statistics.median
    print(f"steps in `all`: {len(lab_play.all_steps(lab, parts))}  (kwok pod ready delay 1.0 s, {args.rounds} rounds)")
    print(f"converged rerun:        median {med(reruns):.2f}s  max {max(reruns):.2f}s  steps changed (actions, which run every time, not counted): {changed}")
    print(f"cold run, concurrent:   median {med(cold_concurrent):.2f}s  ({', '.join(f'{t:.1f}' for t in cold_concurrent)})")
    print(f"cold run, one by one:   median {med(cold_sequential):.2f}s  ({', '.join(f'{t:.1f}' for t in cold_sequential)})")
    print(f"concurrent / sequential: {med(cold_concurrent) / med(cold_sequential):.2f}")


if __name__ == "__main__":
    main()

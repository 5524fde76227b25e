"""The reverse function beside a Ray task, on a kind lab: what docs/ray-vs-openfaas.md reports.

Against the lab an `invoke -f FILE ...` configuration names (its cluster, with faas and ray
installed; offline the function runs without the OpenFaaS gateway). Prints, for each system:
the first call after a fresh deploy (the function: its pod restarted and Ready; Ray: a new
job's first task, which starts a worker), the median and p95 of warm calls, and a batch of
calls with a fixed number in flight, in calls per second.

    python benchmarks/compare.py -f kindlab.yaml [--calls 200] [--batch 1000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from playbooks import compare, faas, parts  # noqa: E402
from playbooks.core.cli import make_context  # noqa: E402
from playbooks.core.settings import lab_from_config  # noqa: E402


def restart_function(ctx) -> None:
    """A fresh pod of the function, as after a deploy: its Deployment rolled, the new pod Ready."""
    ctx.sh.run(["kubectl", "--kubeconfig", str(ctx.lab.kubeconfig), "--context", ctx.lab.context,
                "-n", faas.FN_NAMESPACE, "rollout", "restart", f"deployment/{faas.FUNCTION}"], timeout=60)
    ctx.kube.wait_deployment(faas.FN_NAMESPACE, faas.FUNCTION, timeout=300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--config", required=True, help="the lab's invoke configuration (kindlab: ...)")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--batch", type=int, default=compare.BATCH)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = (yaml.safe_load(Path(args.config).read_text()) or {}).get("kindlab", {})
    lab = lab_from_config(config, parts.SCHEMA)
    rounds: list[list[compare.Latency]] = []
    for _ in range(args.rounds):
        ctx = make_context(lab)
        try:
            restart_function(ctx)
            rounds.append(compare.measure(lab, ctx, args.calls, batch=args.batch))
        finally:
            ctx.sh.close()
    med = statistics.median
    print(f"{lab.context}: {args.rounds} rounds; {args.calls} warm calls and a batch of {args.batch} "
          f"({compare.IN_FLIGHT} in flight) per system each round; medians over the rounds")
    print(f"{'system':<58} {'first ms':>9} {'warm med ms':>12} {'warm p95 ms':>12} {'batch calls/s':>14}")
    for i, system in enumerate(r.system for r in rounds[0]):
        rows = [r[i] for r in rounds]
        warm = [sorted(r.warm_ms) for r in rows]
        p95 = [w[min(len(w) - 1, int(round(0.95 * (len(w) - 1))))] for w in warm]
        print(f"{system:<58} {med(r.first_ms for r in rows):>9.1f} {med(statistics.median(w) for w in warm):>12.1f} "
              f"{med(p95):>12.1f} {med(r.batch / r.batch_s for r in rows):>14.0f}")
        print(f"{'':<58} first calls: {', '.join(f'{r.first_ms:.1f}' for r in rows)}")


if __name__ == "__main__":
    main()

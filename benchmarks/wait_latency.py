"""How long after pods turn Ready does a wait notice? kindlab's watch vs a 5 s poll.

On a kwok testbed cluster (made and deleted here), each round creates a
Deployment whose pods the kwok stage marks Ready after a random 1-3 s. An
independent watch records the moment the last pod is seen Ready; the wait under
test records when it returns. The difference is the wait's latency. The same
is measured for a sleep-polling wait with Ansible's default 5 s delay.

    python benchmarks/wait_latency.py [--rounds 10]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubernetes import watch  # noqa: E402

from playbooks import cluster, toolchain  # noqa: E402
from playbooks.core.cli import make_context  # noqa: E402
from playbooks.core.runner import Reporter, run_play  # noqa: E402
from playbooks.core.settings import KwokSettings, Lab  # noqa: E402
from rich.console import Console  # noqa: E402

NAMESPACE = "default"


def deployment(name: str, delay_ms: int, replicas: int = 3) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name},
                                               "annotations": {"kindlab.dev/ready-delay": f"{delay_ms}ms"}},
                                  "spec": {"containers": [{"name": "c", "image": "bench:1"}]}}}}


def watch_all_ready(kube, name: str, replicas: int, seen: dict, stop: threading.Event) -> None:
    """Records the monotonic time at which `replicas` pods of `name` are first seen Ready."""
    ready: set[str] = set()
    w = watch.Watch()
    for event in w.stream(kube.core.list_namespaced_pod, NAMESPACE, label_selector=f"app={name}",
                          timeout_seconds=60):
        pod = event["object"]
        if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
            ready.add(pod.metadata.name)
        if len(ready) >= replicas and "ready_at" not in seen:
            seen["ready_at"] = time.monotonic()
        if stop.is_set():
            w.stop()


def poll_wait(kube, name: str, replicas: int, delay: float = 5.0) -> None:
    """The sleep loop of a hand-written script or Ansible's `until`/`delay: 5`."""
    while True:
        dep = kube.apps.read_namespaced_deployment(name, NAMESPACE)
        if (dep.status.ready_replicas or 0) == replicas and (dep.status.updated_replicas or 0) == replicas:
            return
        time.sleep(delay)


def one_round(kube, name: str, waiter: str) -> float:
    seen: dict = {}
    stop = threading.Event()
    delay_ms = random.randint(1000, 3000)
    watcher = threading.Thread(target=watch_all_ready, args=(kube, name, 3, seen, stop), daemon=True)
    watcher.start()
    time.sleep(0.3)  # the watch is established before the pods exist
    kube.apps.create_namespaced_deployment(NAMESPACE, deployment(name, delay_ms))
    if waiter == "kindlab":
        kube.wait_deployment(NAMESPACE, name, timeout=60)
    else:
        poll_wait(kube, name, 3)
    returned = time.monotonic()
    stop.set()
    deadline = time.monotonic() + 5
    while "ready_at" not in seen and time.monotonic() < deadline:
        time.sleep(0.01)
    kube.apps.delete_namespaced_deployment(name, NAMESPACE)
    return max(0.0, returned - seen["ready_at"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    bin_dir = toolchain.default_bin_dir()
    home = Path(tempfile.mkdtemp(prefix="kindlab-bench-"))
    lab = Lab(provider="kwok", cluster="kindlab-bench", home=home, kubeconfig=home / "kubeconfig",
              bin_dir=bin_dir, timeout=60, kwok=KwokSettings(nodes=1))
    quiet = Reporter(Console(file=open(home / "play.log", "w")), live=False)
    ctx = make_context(lab, quiet)
    run_play("bench setup", cluster.create_steps(lab), ctx)
    try:
        kube = ctx.kube
        results = {}
        for waiter in ("kindlab", "poll-5s"):
            lat = [one_round(kube, f"bench-{waiter}-{i}".replace("_", "-"), waiter) for i in range(args.rounds)]
            results[waiter] = lat
            print(f"{waiter:<8} latency after pods Ready: median {statistics.median(lat):.3f}s  "
                  f"max {max(lat):.3f}s  (n={len(lat)})", flush=True)
        ratio = statistics.median(results["poll-5s"]) / max(statistics.median(results["kindlab"]), 1e-3)
        print(f"the watch-driven wait notices readiness {ratio:.0f}x sooner (median)")
    finally:
        run_play("bench teardown", cluster.delete_steps(lab), ctx)
        ctx.sh.close()


if __name__ == "__main__":
    main()

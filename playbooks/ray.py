"""The ray play: the KubeRay operator, a laptop-sized RayCluster, and the crawler as a Ray job.

The crawl is submitted through the Ray Jobs API with its own runtime
environment (the crawler package as working_dir): nothing is pip-installed
into running pods.
"""
from __future__ import annotations

import time
from pathlib import Path

from . import cluster as cluster_play
from .core.helm import Release, local_release, release_steps, uninstall_steps as helm_uninstall_steps
from .core.portforward import forwarded
from .core.settings import Lab
from .core.steps import Step, StepFailed, action, ok, skip, unknown

ROOT = Path(__file__).resolve().parent.parent
KUBERAY_REPO = ("kuberay", "https://ray-project.github.io/kuberay-helm/")
KUBERAY_VERSION = "1.7.0"  # its charts default to rayproject/ray:2.52.0, the Ray kindlab pins
NAMESPACE = "ray"
HEAD_SERVICE = "raylab-head-svc"  # fullnameOverride in helm-values/ray-cluster.yaml
DASHBOARD_PORT = 8265
OPERATOR = Release(name="kuberay-operator", namespace="kuberay", chart="kuberay/kuberay-operator",
                   version=KUBERAY_VERSION, repo_name=KUBERAY_REPO[0], repo_url=KUBERAY_REPO[1])
CLUSTER = Release(name="raylab", namespace=NAMESPACE, chart="kuberay/ray-cluster", version=KUBERAY_VERSION,
                  repo_name=KUBERAY_REPO[0], repo_url=KUBERAY_REPO[1],
                  values_files=(ROOT / "helm-values" / "ray-cluster.yaml",), wait=False)
NO_CONTAINERS = "a simulated (kwok) cluster runs no containers, so no Ray job can run there"


def releases(lab: Lab) -> tuple[Release, Release]:
    """Operator and RayCluster releases, from local charts when kindlab.charts names them."""
    return (local_release(OPERATOR, lab.local_chart("kuberay-operator")),
            local_release(CLUSTER, lab.local_chart("ray-cluster")))


def install_steps(lab: Lab) -> list[Step]:
    """The operator, then the RayCluster, then its head and worker pods Ready (not only its status)."""
    operator, cluster = releases(lab)

    def check_operator(ctx):
        reason = cluster_play.operator_unavailable(lab, "ray-operator")
        if reason:
            return skip(reason)
        pods = [p for p in ctx.kube.core.list_namespaced_pod(cluster.namespace).items
                if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
        return ok(f"{len(pods)} Ray pods Ready") if len(pods) >= 2 else unknown("the RayCluster's head and worker pods")

    def wait_pods(ctx):
        ctx.kube.wait_reconciled("ray.io", "v1", "rayclusters", cluster.namespace, operator="KubeRay operator",
                                 timeout=lab.timeout, say=ctx.say)
        return ctx.kube.wait_namespace_ready(cluster.namespace, timeout=lab.timeout, say=ctx.say,
                                             what="ray head and worker pods", min_pods=2)

    return [*release_steps(lab, operator), *release_steps(lab, cluster),
            Step("ray head and worker pods Ready", check_operator, wait=wait_pods)]


def uninstall_steps(lab: Lab) -> list[Step]:
    operator, cluster = releases(lab)
    return [*helm_uninstall_steps(lab, cluster, delete_namespace=True),
            *helm_uninstall_steps(lab, operator, delete_namespace=True)]


def crawl_args(urls: list[str], prefix: str, depth: int, max_pages: int, concurrency: int) -> list[str]:
    if not urls:
        raise StepFailed("give at least one start URL: invoke ray.crawl --url https://docs.ray.io/en/latest/")
    # One site is the usual crawl: --per-host follows --concurrency rather than capping it.
    args = [*urls, "--depth", str(depth), "--max-pages", str(max_pages), "--concurrency", str(concurrency),
            "--per-host", str(concurrency)]
    return args + (["--prefix", prefix] if prefix else [])


def crawl_steps(lab: Lab, args: list[str], address: str = "", show=print) -> list[Step]:
    """Submit the crawler as a Ray job (port-forwarding the head unless --address is given)."""
    from rich.text import Text

    from crawler import jobs  # imports ray: only when a crawl is asked for

    def check(ctx):
        if not address and lab.provider == "kwok":
            return skip(NO_CONTAINERS)
        return ok()

    def submit(ctx):
        def log(line: str) -> None:
            show(Text(line))  # whole: the console wraps a long line; Text keeps "[...]" in it literal
            ctx.say("streaming the Ray job's log")

        def run(url: str, follow: dict) -> str:
            start = time.monotonic()
            try:
                result = jobs.submit_crawl(url, args, on_log=log, timeout_s=lab.timeout * 6, **follow)
            except jobs.CrawlJobError as exc:
                raise StepFailed(str(exc)) from None
            show(Text(jobs.summarize(result)))
            stats = result.get("stats", {})
            cut = f"; cut by --max-pages, {stats['unfetched']} URLs left unfetched" if stats.get("truncated") else ""
            return (f"job finished in {time.monotonic() - start:.0f}s: {stats.get('unique', '?')} pages, "
                    f"{stats.get('failed', 0)} failed{cut}")

        if address:
            return run(address, {})
        with forwarded(ctx, NAMESPACE, f"svc/{HEAD_SERVICE}", DASHBOARD_PORT) as url:
            # This forward ends with the step; `invoke ray.dashboard` keeps one open on the usual port.
            return run(url, {"follow_address": f"http://127.0.0.1:{DASHBOARD_PORT}",
                             "follow_note": "with `invoke ray.dashboard` running in another terminal"})

    return [action("crawler job on Ray", submit, check=check)]


def dashboard(lab: Lab, out=print, local_port: int = DASHBOARD_PORT) -> None:
    """Forward the Ray dashboard (and Jobs API) to 127.0.0.1:8265 until Ctrl-C."""
    import threading

    from .core.commands import make_shell
    from .core.portforward import Forward, Supervisor

    if lab.provider == "kwok":
        raise StepFailed(NO_CONTAINERS.replace("no Ray job can run there", "there is no dashboard"))
    argv = ["kubectl", "--kubeconfig", str(lab.kubeconfig), "--context", lab.context, "-n", NAMESPACE,
            "port-forward", "--address", "127.0.0.1", f"svc/{HEAD_SERVICE}", f"{local_port}:{DASHBOARD_PORT}"]
    shell = make_shell(lab.tools_dir, verbose=lab.verbose)
    supervisor = Supervisor(shell, [Forward("Ray dashboard", argv, local_port)], out)
    try:
        supervisor.start()
        out(f"Ray dashboard  http://127.0.0.1:{local_port}  (Jobs API too: invoke ray.crawl --address "
            f"http://127.0.0.1:{local_port})")
        out("forwarding until Ctrl-C")
        supervisor.run(threading.Event())
    finally:
        supervisor.stop()
        shell.close()

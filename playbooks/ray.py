"""The ray play: the KubeRay operator, a laptop-sized RayCluster, and the crawler as a Ray job.

The crawl is submitted through the Ray Jobs API with its own runtime
environment (the crawler package as working_dir): nothing is pip-installed
into running pods.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from . import images, providers, toolchain
from .core.part import Part
from .core.quantities import node_free, quantity
from .core.helm import (Release, chart_at_hand, chart_defaults, deep_merge, installed, installed_values, load_values,
                        local_release, release_steps, uninstall_steps as helm_uninstall_steps)
from .core.portforward import forwarded
from .core.settings import Lab
from .core.deadline import Longer
from .core.steps import Handoff, Step, StepFailed, action, ok, skip, unknown

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
# A crawl of up to --max-pages pages, politely (per-host limits, robots.txt), through one Ray job.
CRAWL_BUDGET = Longer(6, "a crawl fetches up to --max-pages pages politely, one job from start to summary")
DEFAULT_CRAWL = ["https://docs.ray.io/en/latest/"]  # what `invoke all` and `ray.crawl` crawl
# Offline the internet is out of reach: the lab's own nginx, as the Ray pods reach it inside the cluster.
OFFLINE_CRAWL = ["http://nginx.default.svc.cluster.local/"]


def default_crawl(lab: Lab) -> list[str]:
    """The start URLs when none are given: Ray's docs, or offline the lab's nginx."""
    return OFFLINE_CRAWL if lab.offline else DEFAULT_CRAWL


def releases(lab: Lab) -> tuple[Release, Release]:
    """Operator and RayCluster releases, from local charts when kindlab.charts names them."""
    return (local_release(OPERATOR, lab.local_chart("kuberay-operator")),
            local_release(CLUSTER, lab.local_chart("ray-cluster")))


# --- the images: kindlab's own offline ------------------------------------------
# The feature gates of the KubeRay operator kindlab builds (its pkg/features at
# toolchain.RAY_OPERATOR_VERSION): it exits on any other, and the 1.7.0 chart
# passes three newer ones (RayClusterMTLS, RayClusterNetworkPolicy, RayClusterHistoryServer).
OPERATOR_FEATURE_GATES = ("RayClusterStatusConditions", "RayJobDeletionPolicy", "RayMultiHostIndexing",
                          "RayServiceIncrementalUpgrade", "RayCronJob", "AsyncJobInfoQuery")


def image_values(ref: str | None) -> dict:
    """The charts' `image:` values for an image reference (both charts spell them alike)."""
    if not ref:
        return {}
    repository, _, tag = ref.rpartition(":")
    return {"image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"}}


def operator_values_step(lab: Lab, operator: Release, decides: Handoff[dict]) -> Step:
    """The operator image offline (or named), and the chart's feature gates that image knows: the
    operator release's values, decided here, received by its release step."""
    ref = images.for_part(lab, "kuberay-operator")

    def check(ctx):
        values = image_values(ref)
        detail = f"operator image {ref}"
        if ref.startswith(f"{images.REPOSITORY}/kuberay-operator:"):
            chart = chart_at_hand(lab, operator)
            if chart is None:
                raise StepFailed(f"the chart {operator.chart} {operator.version} is not on this machine, so "
                                 "kindlab cannot tell which of its feature gates to leave out: set "
                                 "kindlab.charts.kuberay-operator to a copy of it")
            gates = chart_defaults(chart).get("featureGates") or []
            kept = [g for g in gates if g.get("name") in OPERATOR_FEATURE_GATES]
            dropped = [g.get("name") for g in gates if g not in kept]
            values["featureGates"] = kept
            if dropped:
                detail += (f"; feature gates {', '.join(dropped)} left out: the KubeRay operator "
                           f"{toolchain.RAY_OPERATOR_VERSION} kindlab builds does not know them (it would exit)")
        return ok(detail, value=values)

    return Step("kuberay-operator values for its image", check, decides=decides)


# --- sizing the RayCluster to the cluster it lands on ---------------------------
RAY_FLOOR = {"cpu_m": 250, "memory_mib": 768}  # less, and Ray's head (GCS, dashboard, raylet) does not start
@dataclass(frozen=True)
class Sizing:
    cpu_m: int          # each of head and worker
    memory_mib: int
    free: str           # what the nodes had for Ray, in words
    fits: bool

    def values(self) -> dict:
        size = {"cpu": f"{self.cpu_m}m", "memory": f"{self.memory_mib}Mi"}
        resources = {"requests": size, "limits": size}
        return {"head": {"resources": resources}, "worker": {"resources": resources}}

    def describe(self) -> str:
        share = "" if self.fits else "would get only "
        return f"head and worker {share}{self.cpu_m}m CPU / {self.memory_mib}Mi each (free for Ray: {self.free})"


def size_cluster(kube, reserve: tuple[int, int], ceiling: tuple[int, int]) -> Sizing:
    """Split what the roomiest node has free between the head and the worker.

    Free is allocatable minus what pods request, the Ray pods' own requests
    counted as free (so a rerun decides the same), minus `reserve` for the
    lab's parts not running yet; rounded down to 50m and 128Mi, at most
    `ceiling` (the values file's size), and `fits` only at or above RAY_FLOOR.
    """
    best = max(((cpu, mem) for _, cpu, mem, _ in node_free(kube, skip_namespace=NAMESPACE)), default=(0, 0))
    cpu = min(ceiling[0], (best[0] - reserve[0]) // 2 // 50 * 50)
    mem = min(ceiling[1], (best[1] - reserve[1]) // 2 // 128 * 128)
    free = f"{best[0]}m CPU / {best[1]}Mi on the roomiest node, {reserve[0]}m / {reserve[1]}Mi kept for the lab's other parts"
    return Sizing(cpu, mem, free, cpu >= RAY_FLOOR["cpu_m"] and mem >= RAY_FLOOR["memory_mib"])


def misfit(sizing: Sizing) -> str:
    """What a RayCluster that does not fit gets, and what Ray needs (doctor and the sizing step say it)."""
    return (f"the RayCluster does not fit: {sizing.describe()}, but Ray needs at least "
            f"{RAY_FLOOR['cpu_m']}m CPU / {RAY_FLOOR['memory_mib']}Mi for each of its two pods")


def fits(lab: Lab, kube, parts: Sequence[Part]) -> tuple[str, str, str]:
    """`invoke doctor`: whether the RayCluster fits the cluster, before installing it."""
    sizing = size_cluster(kube, _reserve(lab, kube, parts), _ceiling())
    if sizing.fits:
        return "ok", f"the RayCluster fits: {sizing.describe()}", ""
    return "fail", misfit(sizing), "free resources, leave parts out (invoke all --skip ray) or use a larger node"


def _reserve(lab: Lab, kube, parts: Sequence[Part]) -> tuple[int, int]:
    """What the lab's other parts will request that is not running yet (they install beside Ray)."""
    present = {ns.metadata.name for ns in kube.core.list_namespace().items}
    waiting = [p.requested(lab) for p in parts if p.name != "ray" and not set(p.namespaces) & present]
    return sum(cpu for cpu, _ in waiting), sum(mem for _, mem in waiting)


def installed_size(ctx, lab: Lab) -> tuple[int, int] | None:
    """The head's requests (millicores, MiB) in the installed RayCluster release's values, if any."""
    rel = releases(lab)[1]
    if installed(ctx, lab, rel) is None:
        return None
    requests = (((installed_values(ctx, lab, rel).get("head") or {}).get("resources") or {}).get("requests") or {})
    try:
        return quantity(requests["cpu"], "m"), quantity(requests["memory"], "Mi")
    except (KeyError, ValueError):
        return None


def _ceiling() -> tuple[int, int]:
    requests = load_values(CLUSTER)["head"]["resources"]["requests"]
    return quantity(requests["cpu"], "m"), quantity(requests["memory"], "Mi")


def sizing_step(lab: Lab, decides: Handoff[dict], parts: Sequence[Part] = (), fixed: dict | None = None) -> Step:
    """Decide the Ray pods' size once, before the RayCluster release; an oversized lab fails here, in seconds.

    `parts`: the lab's parts (what the others will take is kept for them). The RayCluster
    release's values are decided here (`decides`); `fixed`: what they hold besides the size
    (kindlab's Ray image offline).
    """
    def check(ctx):
        sizing = size_cluster(ctx.kube, _reserve(lab, ctx.kube, parts), _ceiling())
        if not sizing.fits:
            raise StepFailed(f"{misfit(sizing)}; free resources (leave parts out: invoke all --skip monitoring) "
                             "or add a larger node")
        kept = installed_size(ctx, lab)
        if kept and RAY_FLOOR["cpu_m"] <= kept[0] <= sizing.cpu_m and RAY_FLOOR["memory_mib"] <= kept[1] <= \
                sizing.memory_mib:
            # The size installed still fits: keep it, so a rerun changes nothing (parts installed side by
            # side make what is free differ from run to run; a larger share is not worth new Ray pods).
            sizing = replace(sizing, cpu_m=kept[0], memory_mib=kept[1])
            detail = f"{sizing.describe()}; the installed size, which still fits"
        else:
            detail = sizing.describe()
        return ok(detail, value=deep_merge(fixed or {}, sizing.values()))

    return Step("ray pods sized to the cluster", check, decides=decides)


def install_steps(lab: Lab, parts: Sequence[Part] = ()) -> list[Step]:
    """The operator, the Ray pods' size, then the RayCluster, then its head and worker pods Ready.

    With kindlab's images (offline), each is loaded into the kind nodes just
    before the release that runs it: the Ray image, the big one, only once the
    RayCluster is known to fit.
    """
    provider = providers.of(lab)
    operator, cluster = releases(lab)
    size: Handoff[dict] = Handoff("the RayCluster's values (its pods' size)")  # the sizing step decides it
    cluster = replace(cluster, values=size)
    operator_ref, ray_ref = images.for_part(lab, "kuberay-operator"), images.for_part(lab, "ray")
    before_operator: list[Step] = []
    if operator_ref:
        gates: Handoff[dict] = Handoff("the KubeRay operator's values for its image")
        operator = replace(operator, values=gates)
        before_operator.append(operator_values_step(lab, operator, gates))
        before_operator += provider.images_steps("kuberay-operator", [operator_ref])
    load_ray = provider.images_steps("ray", [ray_ref]) if ray_ref else []

    def check_operator(ctx):
        reason = provider.operator_unavailable("ray-operator", ctx.sh)
        if reason:
            return skip(reason)
        from .core.kube import condition_ready

        pods = [p for p in ctx.kube.core.list_namespaced_pod(cluster.namespace).items if condition_ready(p)]
        return ok(f"{len(pods)} Ray pods Ready") if len(pods) >= 2 else unknown("the RayCluster's head and worker pods")

    def wait_pods(ctx):
        ctx.kube.wait_reconciled("ray.io", "v1", "rayclusters", cluster.namespace, operator="KubeRay operator",
                                 say=ctx.say)
        return ctx.kube.wait_namespace_ready(cluster.namespace, say=ctx.say,
                                             what="ray head and worker pods", min_pods=2)

    return [*before_operator, *release_steps(lab, operator), sizing_step(lab, size, parts, image_values(ray_ref)),
            *load_ray, *release_steps(lab, cluster), Step("ray head and worker pods Ready", check_operator, wait=wait_pods)]


def cluster_status(kube) -> list[tuple[str, str]]:
    """A row per RayCluster for `invoke status` (none before KubeRay's CRDs exist)."""
    from kubernetes.client.exceptions import ApiException
    try:
        items = kube.custom.list_cluster_custom_object("ray.io", "v1", "rayclusters")["items"]
    except ApiException as exc:
        if exc.status == 404:
            return []
        raise
    return [(f"RayCluster {rc['metadata']['name']}", (rc.get("status") or {}).get("state", "no state yet"))
            for rc in items]


def uninstall_steps(lab: Lab, parts: Sequence[Part] = ()) -> list[Step]:
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
        if not address and not lab.can.runs_containers:
            return skip(NO_CONTAINERS)
        return ok()

    def submit(ctx):
        summed_up = []  # the crawler prints its own summary into the job's log: then it is not repeated

        def log(line: str) -> None:
            show(Text(line))  # whole: the console wraps a long line; Text keeps "[...]" in it literal
            ctx.say("streaming the Ray job's log")
            if line.startswith("Total: "):
                summed_up.append(line)

        def run(url: str, follow: dict) -> str:
            start = time.monotonic()
            try:
                result = jobs.submit_crawl(url, args, on_log=log, timeout_s=ctx.deadline.left(), **follow)
            except jobs.CrawlJobError as exc:
                raise StepFailed(str(exc)) from None
            if not summed_up:
                show(Text(jobs.summarize(result)))
            stats = result.get("stats", {})
            if not stats.get("unique"):
                raise StepFailed(f"the crawl fetched no page: {nothing_fetched(stats)}")
            cut = f"; cut by --max-pages, {stats['unfetched']} URLs left unfetched" if stats.get("truncated") else ""
            return (f"job finished in {time.monotonic() - start:.0f}s: {stats.get('unique', '?')} pages, "
                    f"{stats.get('failed', 0)} failed{cut}")

        if address:
            return run(address, {})
        with forwarded(ctx, NAMESPACE, f"svc/{HEAD_SERVICE}", DASHBOARD_PORT) as url:
            # This forward ends with the step; `invoke ray.dashboard` keeps one open on the usual port.
            return run(url, {"follow_address": f"http://127.0.0.1:{DASHBOARD_PORT}",
                             "follow_note": "with `invoke ray.dashboard` running in another terminal"})

    return [action("crawler job on Ray", submit, check=check, budget=CRAWL_BUDGET)]


def nothing_fetched(stats: dict) -> str:
    """Why a crawl came back empty, and what to do: a job that "succeeded" on nothing is no result."""
    if stats.get("blocked_by_robots"):
        return ("its start URL was blocked by robots.txt. A site whose robots.txt cannot be read (the host not "
                "reached from the cluster, or a 5xx) may not be crawled at all (RFC 9309): crawl a site the "
                "cluster reaches: invoke ray.crawl --url URL")
    if stats.get("failed"):
        return "every fetch failed (the log above names each URL and its error)"
    return "the start URLs led to no HTML page (out of --prefix, or not HTML)"


def dashboard(lab: Lab, out=print, local_port: int = DASHBOARD_PORT) -> None:
    """Forward the Ray dashboard (and Jobs API) to 127.0.0.1:8265 until Ctrl-C."""
    import threading

    from .core.commands import make_shell
    from .core.portforward import Forward, Supervisor

    if not lab.can.runs_containers:
        raise StepFailed(NO_CONTAINERS.replace("no Ray job can run there", "there is no dashboard"))
    argv = ["kubectl", *lab.cluster_flags(), "-n", NAMESPACE, "port-forward", "--address", "127.0.0.1",
            f"svc/{HEAD_SERVICE}", f"{local_port}:{DASHBOARD_PORT}"]
    shell = make_shell(lab)
    supervisor = Supervisor(shell, [Forward("Ray dashboard", argv, local_port)], out)
    try:
        supervisor.start()
        out(f"Ray dashboard  http://127.0.0.1:{local_port}  (Jobs API too: invoke ray.crawl --address "
            f"http://127.0.0.1:{local_port}){shell.note(f'http://127.0.0.1:{local_port}')}")
        out("forwarding until Ctrl-C")
        supervisor.run(threading.Event())
    finally:
        supervisor.stop()
        shell.close()


PART = Part(
    name="ray", namespaces=(OPERATOR.namespace, NAMESPACE), install=install_steps, uninstall=uninstall_steps,
    help=("Install the KubeRay operator and a laptop-sized RayCluster; wait for its head and worker pods.",
          "Uninstall the RayCluster and the KubeRay operator."),
    use=lambda lab, parts=(): crawl_steps(lab, crawl_args(default_crawl(lab), "", 2, 200, 8)),
    addresses=lambda lab: [("Ray dashboard", f"http://127.0.0.1:{DASHBOARD_PORT}", "invoke ray.dashboard")],
    status=lambda lab, kube: cluster_status(kube),
    memory_mib=3072, cpus=1.5, preflight=fits, images=("ray", "kuberay-operator"),
    releases=lambda lab: dict(zip(("kuberay-operator", "ray-cluster"), releases(lab))))

"""The ray play: the KubeRay operator, a laptop-sized RayCluster, and the crawler as a Ray job.

The crawl is submitted through the Ray Jobs API with its own runtime
environment: nothing is pip-installed into running pods. Offline, the
RayCluster runs kindlab's Ray image, which has the crawler installed, so the
job ships nothing; on any other Ray the crawler package travels as the job's
working_dir. Offline, the ray part also serves the site the crawl reads (Python's
documentation, kindlab's python-docs image) beside the RayCluster.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from . import images, providers, toolchain
from .core.part import Part
from .core.quantities import LIVE_PODS, node_free, quantity, requests
from .core.helm import (Release, chart_at_hand, chart_defaults, deep_merge, installed, installed_values, load_values,
                        local_release, release_steps, uninstall_steps as helm_uninstall_steps)
from .core import kyaml
from .core.portforward import forwarded
from .core.resources import applied
from .core.settings import Lab
from .core.deadline import Longer
from .core.steps import Handoff, Step, StepFailed, action, change, ok, skip, unknown

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
RAY_PODS = "ray.io/node-type"  # the label KubeRay puts on the head and worker pods (the site has none)
SITE = "python-docs"  # offline, the crawl's site: the catalog image, its Deployment and Service in NAMESPACE
SITE_MANIFEST = ROOT / "manifests" / "python-docs.yaml"
# A crawl of up to --max-pages pages, politely (per-host limits, robots.txt), through one Ray job.
CRAWL_BUDGET = Longer(6, "a crawl fetches up to --max-pages pages politely, one job from start to summary")


@dataclass(frozen=True)
class CrawlTarget:
    """What `invoke all` and `ray.crawl` crawl when no URL is given, and how far."""
    urls: tuple[str, ...]
    depth: int
    max_pages: int
    concurrency: int


# Online, Ray's documentation, lightly (a public site). Offline the internet is out of reach: Python's
# documentation, served inside the cluster by the ray part (518 pages within depth 2, all of them).
ONLINE_CRAWL = CrawlTarget(("https://docs.ray.io/en/latest/",), depth=2, max_pages=200, concurrency=8)
OFFLINE_CRAWL = CrawlTarget((f"http://{SITE}.{NAMESPACE}.svc.cluster.local/",), depth=2, max_pages=1000,
                            concurrency=16)


def default_crawl(lab: Lab) -> CrawlTarget:
    """Ray's docs, or offline Python's docs inside the cluster."""
    return OFFLINE_CRAWL if lab.offline else ONLINE_CRAWL


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
        """Requests of the size decided; memory limited to it, CPU not limited (null deletes the chart's
        default): the scheduler counts the requests, so every part still gets its share, while the Ray
        processes a job starts (supervisor, driver, workers) use idle CPU instead of being throttled."""
        size = {"cpu": f"{self.cpu_m}m", "memory": f"{self.memory_mib}Mi"}
        resources = {"requests": size, "limits": {"cpu": None, "memory": size["memory"]}}
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
    free = (f"{best[0]}m CPU / {best[1]}Mi on the roomiest node, {reserve[0]}m / {reserve[1]}Mi kept for the lab's "
            "other parts")
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
    """What the lab's other parts will still request (they install beside Ray), and the crawl's site where
    the ray part serves one.

    A part counts what it requests in this lab less what its pods request now:
    one whose release is still making its pods (monitoring, beside Ray in
    `invoke all`) counts whole, not as nothing because its namespace exists.
    The site sits in Ray's namespace, whose pods count as free: it is always kept.
    """
    running: dict[str, tuple[int, int]] = {}
    for pod in kube.core.list_pod_for_all_namespaces(field_selector=LIVE_PODS).items:
        cpu, mem = requests(pod)
        have = running.get(pod.metadata.namespace, (0, 0))
        running[pod.metadata.namespace] = (have[0] + cpu, have[1] + mem)
    site = site_requests() if site_image(lab) else (0, 0)
    return tuple(site[i] + sum(max(0, p.requested(lab)[i] - sum(running.get(ns, (0, 0))[i] for ns in p.namespaces))
                               for p in parts if p.name != "ray") for i in (0, 1))


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


# --- the crawl's site, offline ---------------------------------------------------------
def site_image(lab: Lab) -> str | None:
    """The python-docs image the ray part serves: offline kindlab's (or kindlab.images.python-docs), else none."""
    return images.for_part(lab, SITE)


def site_documents(ref: str) -> list[dict]:
    """manifests/python-docs.yaml with its image set."""
    docs = [d for d in kyaml.load_all(SITE_MANIFEST.read_text(encoding="utf-8")) if d]
    docs[0]["spec"]["template"]["spec"]["containers"][0]["image"] = ref
    return docs


def site_requests() -> tuple[int, int]:
    """What the site's pod requests (millicores, MiB), as the manifest says."""
    requests = site_documents("")[0]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    return quantity(requests["cpu"], "m"), quantity(requests["memory"], "Mi")


def site_steps(lab: Lab, ref: str, after: str) -> list[Step]:
    """The site's image on the nodes, then its Deployment and Service rolled out: beside the RayCluster's
    release and pods (`after`: the step that makes Ray's namespace)."""
    load = [replace(s, needs=(after,)) for s in providers.of(lab).images_steps(SITE, [ref])]
    site = applied(f"{SITE} site (the crawl's)", lab, lambda: site_documents(ref),
                   wait=lambda ctx: ctx.kube.wait_deployment(NAMESPACE, SITE, say=ctx.say),
                   needs=(load[-1].name if load else after,))
    return [*load, site]


def install_steps(lab: Lab, parts: Sequence[Part] = ()) -> list[Step]:
    """The operator, the Ray pods' size, then the RayCluster, then its head and worker pods Ready.

    With kindlab's images (offline), each is loaded into the kind nodes just
    before the release that runs it: the Ray image, the big one, only once the
    RayCluster is known to fit. Offline, the crawl's site comes up beside the
    RayCluster, once its namespace is there.
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

        pods = [p for p in ctx.kube.core.list_namespaced_pod(cluster.namespace, label_selector=RAY_PODS).items
                if condition_ready(p) and not p.metadata.deletion_timestamp]  # not one just recreated
        return ok(f"{len(pods)} Ray pods Ready") if len(pods) >= 2 else unknown("the RayCluster's head and worker pods")

    def wait_pods(ctx):
        ctx.kube.wait_reconciled("ray.io", "v1", "rayclusters", cluster.namespace, operator="KubeRay operator",
                                 say=ctx.say)
        # every pod of the namespace Ready: the head, the worker and, offline, the crawl's site
        return ctx.kube.wait_namespace_ready(cluster.namespace, say=ctx.say,
                                             what="ray head and worker pods", min_pods=2 + (1 if site else 0))

    cluster_steps = [*release_steps(lab, cluster), pods_on_spec_step(lab, cluster.name)]
    site_ref = site_image(lab)
    site = site_steps(lab, site_ref, after=cluster_steps[0].name) if site_ref else []
    ready = Step("ray head and worker pods Ready", check_operator, wait=wait_pods)
    if site:  # the pods' wait after both the RayCluster's steps and the site
        ready = replace(ready, needs=(cluster_steps[-1].name, site[-1].name))
    return [*before_operator, *release_steps(lab, operator), sizing_step(lab, size, parts, image_values(ray_ref)),
            *load_ray, *cluster_steps, *site, ready]


def pods_on_spec_step(lab: Lab, name: str) -> Step:
    """KubeRay leaves running pods as they are when the RayCluster's spec changes (the chart exposes no
    upgrade strategy): a Ray pod whose image or resources differ from its group's template is deleted, and
    the operator makes it again from the spec. So a new Ray image (a crawler edit) or a new size reaches
    the pods, and a rerun on pods that match changes nothing."""
    def stale(ctx) -> list[str]:
        from kubernetes.client.exceptions import ApiException

        try:
            spec = ctx.kube.custom.get_namespaced_custom_object("ray.io", "v1", NAMESPACE, "rayclusters", name)["spec"]
        except ApiException as exc:
            if exc.status == 404:
                return []  # no RayCluster yet: the operator makes its pods from the spec
            raise
        templates = {"headgroup": spec["headGroupSpec"]["template"]["spec"]["containers"][0]}
        templates.update({group["groupName"]: group["template"]["spec"]["containers"][0]
                          for group in spec.get("workerGroupSpecs") or []})
        found = []
        for pod in ctx.kube.core.list_namespaced_pod(NAMESPACE, label_selector=RAY_PODS).items:
            want = templates.get((pod.metadata.labels or {}).get("ray.io/group", ""))
            have = pod.spec.containers[0]
            if want is None or pod.metadata.deletion_timestamp:
                continue
            if have.image != want.get("image"):
                found.append(f"{pod.metadata.name} (image {have.image} -> {want.get('image')})")
            elif _sizes(have.resources.to_dict() if have.resources else {}) != _sizes(want.get("resources") or {}):
                found.append(f"{pod.metadata.name} (resources)")
        return found

    def check(ctx):
        found = stale(ctx)
        return change(f"recreate {', '.join(found)}") if found else ok("the Ray pods run the RayCluster's spec")

    def recreate(ctx):
        for entry in stale(ctx):
            ctx.kube.core.delete_namespaced_pod(entry.split(" ", 1)[0], NAMESPACE)

    return Step(f"{name} pods on the RayCluster's spec", check, recreate)


def _sizes(resources: dict) -> dict:
    """requests/limits as comparable numbers (a pod's quantities come back canonical: 2048Mi as 2Gi)."""
    return {kind: {key: quantity(value, "m" if key == "cpu" else "Mi") for key, value in (values or {}).items()}
            for kind, values in resources.items() if kind in ("requests", "limits") and values}


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


def target_args(target: CrawlTarget) -> list[str]:
    return crawl_args(list(target.urls), "", target.depth, target.max_pages, target.concurrency)


def crawl_args(urls: list[str], prefix: str, depth: int, max_pages: int, concurrency: int) -> list[str]:
    if not urls:
        raise StepFailed("give at least one start URL: invoke ray.crawl --url https://docs.ray.io/en/latest/")
    # One site is the usual crawl: --per-host follows --concurrency rather than capping it.
    args = [*urls, "--depth", str(depth), "--max-pages", str(max_pages), "--concurrency", str(concurrency),
            "--per-host", str(concurrency)]
    return args + (["--prefix", prefix] if prefix else [])


KEPT_CRAWL = "kindlab-crawl"  # a ConfigMap in NAMESPACE: the last crawl `invoke all` ran, and what it crawled with


def crawl_record(ctx, args: list[str]) -> tuple[str, dict | None]:
    """What a crawl's result depends on, as a key: its arguments, the RayCluster (its uid) and the images of
    the Ray pods and of the docs site (the crawler's and the site's content are in their tags); and the crawl
    `invoke all` kept, when it was of that key. One kubectl call."""
    import hashlib
    import json

    lab = ctx.lab
    out = ctx.sh.run(["kubectl", *lab.cluster_flags(), "-n", NAMESPACE, "get",
                      "rayclusters,pods,deployments,configmaps", "-o", "json"], check=False)
    if out.returncode != 0:
        return "", None
    parts, kept = [], None
    for item in json.loads(out.stdout or "{}").get("items", []):
        kind, meta, spec = item.get("kind"), item.get("metadata", {}), item.get("spec", {})
        if kind == "RayCluster":
            parts.append(f"RayCluster {meta.get('name')} {meta.get('uid')}")
        elif kind == "Pod" and RAY_PODS in (meta.get("labels") or {}):  # its images, not its name: a restart keeps it
            parts.append("Pod " + " ".join(c.get("image", "") for c in spec.get("containers", [])))
        elif kind == "Deployment" and meta.get("name") == SITE:
            parts.append("Site " + " ".join(c.get("image", "") for c in spec["template"]["spec"]["containers"]))
        elif kind == "ConfigMap" and meta.get("name") == KEPT_CRAWL:
            try:
                kept = json.loads((item.get("data") or {}).get("crawl", ""))
            except ValueError:
                kept = None
    if not any(part.startswith("RayCluster ") for part in parts):
        return "", None
    key = hashlib.sha256(json.dumps([args, sorted(parts)]).encode()).hexdigest()[:16]
    return key, (kept if kept and kept.get("key") == key else None)


def keep_crawl(ctx, key: str, record: dict) -> None:
    """Note the crawl just run as `invoke all`'s (a ConfigMap beside the RayCluster)."""
    import json

    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": KEPT_CRAWL, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": "kindlab"}},
            "data": {"crawl": json.dumps({**record, "key": key})}}
    ctx.sh.run(["kubectl", *ctx.lab.cluster_flags(), "apply", "--server-side", "--force-conflicts",
                "--field-manager=kindlab", "-f", "-"], input=json.dumps(body))


def crawl_steps(lab: Lab, args: list[str], address: str = "", show=print, keep: bool = False) -> list[Step]:
    """Submit the crawler as a Ray job (port-forwarding the head unless --address is given).

    With keep (`invoke all`), a crawl is a job done once: its summary is kept in a ConfigMap, and while
    the arguments, the RayCluster and the images of its pods and of the docs site stay the same, a rerun
    says what the kept crawl found instead of crawling again (`invoke ray.crawl` always crawls)."""
    from rich.text import Text

    from crawler import jobs, timing

    record: dict = {}  # keep: what the crawl is keyed by, as the check found it

    def check(ctx):
        if not address and not lab.can.runs_containers:
            return skip(NO_CONTAINERS)
        if keep:
            record["key"], kept = crawl_record(ctx, args)  # the key handed to the crawl, if it runs
            if kept:
                return ok(f"crawled before with this crawler, site and RayCluster (job {kept['job']}, "
                          f"{kept['when']}): {kept['found']}; `invoke ray.crawl` crawls again")
            return change(f"crawl {args[0]}: no crawl of it kept for this crawler, site and RayCluster")
        return ok()

    def submit(ctx):
        summed_up = []  # the crawler prints its own summary into the job's log: then it is not repeated

        def log(line: str) -> None:
            show(Text(line))  # whole: the console wraps a long line; Text keeps "[...]" in it literal
            ctx.say("streaming the Ray job's log")
            if line.startswith("Total: "):
                summed_up.append(line)

        def run(url: str, follow: dict, forward_s: float | None = None, ship_package: bool = True) -> str:
            start = time.monotonic()
            try:
                result = jobs.submit_crawl(url, args, on_log=log, timeout_s=ctx.deadline.left(),
                                           ship_package=ship_package, **follow)
            except jobs.CrawlJobError as exc:
                raise StepFailed(str(exc)) from None
            if not summed_up:
                show(Text(jobs.summarize(result)))
            if lab.verbose:
                how = "the crawler shipped as working_dir" if ship_package else "the crawler from the Ray image"
                aside = timing.fetchers_aside(result)
                show(Text(timing.format_phases(timing.job_phases(result, forward_s),
                                               f"where the crawl job's seconds went ({how})")
                          + (f"\n  ({aside})" if aside else "")))
            stats = result.get("stats", {})
            if not stats.get("unique"):
                raise StepFailed(f"the crawl fetched no page: {nothing_fetched(stats)}")
            cut = f"; cut by --max-pages, {stats['unfetched']} URLs left unfetched" if stats.get("truncated") else ""
            found = f"{stats.get('unique', '?')} pages, {stats.get('failed', 0)} failed{cut}"
            if keep and key:
                keep_crawl(ctx, key, {"job": result["job"]["id"], "found": found,
                                      "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
            return f"job finished in {time.monotonic() - start:.1f}s: {found}"

        key = record.get("key", "") if keep else ""
        if address:  # a Ray of the user's: its image may have no crawler, or another
            return run(address, {})
        opening = time.monotonic()
        with ThreadPoolExecutor(1) as pool:
            in_pods = pool.submit(crawler_in_pods, ctx)  # asked while the forward opens
            with forwarded(ctx, NAMESPACE, f"svc/{HEAD_SERVICE}", DASHBOARD_PORT) as url:
                # This forward ends with the step; `invoke ray.dashboard` keeps one open on the usual port.
                return run(url, {"follow_address": f"http://127.0.0.1:{DASHBOARD_PORT}",
                                 "follow_note": "with `invoke ray.dashboard` running in another terminal"},
                           forward_s=time.monotonic() - opening, ship_package=not in_pods.result())

    if keep:
        return [Step("crawler job on Ray", check, submit, budget=CRAWL_BUDGET)]
    return [action("crawler job on Ray", submit, check=check, budget=CRAWL_BUDGET)]


def crawler_in_pods(ctx) -> bool:
    """Whether every Ray pod runs kindlab's Ray image as this checkout builds it (its tag hashes the crawler's
    files): the crawler installed there is this one, so the job ships none. KubeRay does not replace running
    pods when the RayCluster's image changes, so a pod left on an older build gets the package shipped.
    Asked with kubectl: `ray.crawl` needs no Kubernetes client otherwise, and importing one costs more."""
    lab = ctx.lab
    out = ctx.sh.run(["kubectl", "--kubeconfig", str(lab.kubeconfig), "--context", lab.context, "-n", NAMESPACE,
                      "get", "pods", "-l", RAY_PODS, "-o", "jsonpath={.items[*].spec.containers[*].image}"],
                     check=False)
    found = out.stdout.split() if out.returncode == 0 else []
    return bool(found) and set(found) == {images.reference("ray")}


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

    from .core.cli import make_shell
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
    use=lambda lab, parts=(): crawl_steps(lab, target_args(default_crawl(lab)), keep=True),
    addresses=lambda lab: [("Ray dashboard", f"http://127.0.0.1:{DASHBOARD_PORT}", "invoke ray.dashboard")],
    status=lambda lab, kube: cluster_status(kube),
    memory_mib=3072, cpus=1.5, preflight=fits, images=("ray", "kuberay-operator", SITE),
    releases=lambda lab: dict(zip(("kuberay-operator", "ray-cluster"), releases(lab))))

"""The monitoring play: kube-prometheus-stack (Prometheus, Grafana) through Helm.

Grafana's admin password is made once, at random, into Secret
monitoring/grafana-admin (never rotated by a rerun, never in argv or a log);
the chart reads it from there and `password()` decodes it in Python.
`dashboards()` keeps port-forwards to Grafana and Prometheus alive until
Ctrl-C; `verify_steps()` checks targets and health through short-lived ones.
"""
from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import images, probes, providers, toolchain
from .core.helm import (Release, deep_merge, load_values, local_release, release_steps,
                        uninstall_steps as helm_uninstall_steps)
from .core.part import Part
from .core.portforward import Forward, Supervisor, forwarded  # noqa: F401 (Supervisor, Forward re-exported)
from .core.settings import Lab
from .core.steps import Step, StepFailed, action, change, ok, skip, unknown

ROOT = Path(__file__).resolve().parent.parent
VALUES = ROOT / "helm-values" / "kube-prometheus-stack.yaml"
NAMESPACE = "monitoring"
RELEASE_NAME = "monitoring"
CHART = "prometheus-community/kube-prometheus-stack"
CHART_VERSION = "79.9.0"
REPO = ("prometheus-community", "https://prometheus-community.github.io/helm-charts")
# Service names follow fullnameOverride / grafana.fullnameOverride in VALUES.
PROMETHEUS_SERVICE, PROMETHEUS_PORT = "kps-prometheus", 9090
GRAFANA_SERVICE, GRAFANA_PORT = "kps-grafana", 80
ADMIN_SECRET, ADMIN_USER_KEY, ADMIN_PASSWORD_KEY = "grafana-admin", "admin-user", "admin-password"
ADMIN_USER = "admin"
LOCAL_GRAFANA_PORT, LOCAL_PROMETHEUS_PORT = 3000, 9090
NO_CONTAINERS = ("a simulated (kwok) cluster runs no containers, so there is no Prometheus or Grafana "
                 "to answer HTTP; these checks need a real cluster (--provider kind)")


def release(lab: Lab, chart: str | None = None) -> Release:
    """The kube-prometheus-stack release; `chart` (or kindlab.charts.monitoring) a local chart instead.

    Offline, kindlab's images and the parts that cannot run without a registry
    turned off (OFFLINE_OFF) go over the lab's values, which keep the rest.
    """
    base = Release(name=RELEASE_NAME, namespace=NAMESPACE, chart=CHART, version=CHART_VERSION,
                   repo_name=REPO[0], repo_url=REPO[1], values_files=(VALUES,), crds_from_chart=True,
                   min_pods=2, values=offline_values(lab))
    return local_release(base, chart or lab.local_chart("monitoring"))


# --- offline: kindlab's images, and what cannot run without a registry ---------
# (values that turn it off, what the output calls it, why)
OFFLINE_OFF = (
    ({"grafana": {"enabled": False}}, "Grafana",
     "its image cannot be built from package registries (the Go module proxy refuses github.com/grafana/grafana, "
     "and its module is AGPL): the Prometheus UI is the lab's window"),
)
# What runs offline from images kindlab builds from source archives (kindlab.sources.monitoring), and
# what turns it off, with the archive's reason, where one is missing: (catalog image, values, what)
FROM_ARCHIVES = (
    ("kube-state-metrics", {"kubeStateMetrics": {"enabled": False}}, "kube-state-metrics"),
    ("kube-webhook-certgen",
     {"prometheusOperator": {"admissionWebhooks": {"enabled": False, "patch": {"enabled": False}},
                             "tls": {"enabled": False}}},
     # the operator's TLS certificate is the certificate Job's work: without it the operator serves plain HTTP
     "the admission webhooks, their certificate Job and the operator's TLS"),
)
# catalog image -> where kube-prometheus-stack 79.9.0's values name it
OFFLINE_IMAGES = {
    "prometheus-operator": ("prometheusOperator", "image"),
    "prometheus-config-reloader": ("prometheusOperator", "prometheusConfigReloader", "image"),
    "prometheus": ("prometheus", "prometheusSpec", "image"),
    "alertmanager": ("alertmanager", "alertmanagerSpec", "image"),
    "node-exporter": ("prometheus-node-exporter", "image"),
    "kube-state-metrics": ("kube-state-metrics", "image"),  # the subchart's own key
    "kube-webhook-certgen": ("prometheusOperator", "admissionWebhooks", "patch", "image"),
}
# The custom resources' `version` defaults to the image tag: kindlab's tags carry a hash too.
OFFLINE_VERSIONS = {("prometheus", "prometheusSpec", "version"): toolchain.PROMETHEUS_VERSION,
                    ("alertmanager", "alertmanagerSpec", "version"): toolchain.ALERTMANAGER_VERSION}


def offline_off(lab: Lab) -> list[tuple[dict, str, str]]:
    """What offline mode turns off here: Grafana, and what a missing source archive leaves without an image."""
    missing = [(off, what, reason) for name, off, what in FROM_ARCHIVES
               if (reason := images.archive_missing(lab, name))]
    return [*OFFLINE_OFF, *missing]


def offline_images(lab: Lab) -> list[str]:
    """The catalog images the release runs offline (those a missing archive turned off left out)."""
    off = {name for name, _, _ in FROM_ARCHIVES if images.archive_missing(lab, name)}
    return [name for name in OFFLINE_IMAGES if name not in off]


def offline_values(lab: Lab) -> dict:
    """What offline mode sets over the lab's values: kindlab's images, and what cannot run turned off."""
    values: dict = {}
    for name, path in OFFLINE_IMAGES.items():
        ref = images.for_part(lab, name)
        if ref:
            registry, _, rest = ref.partition("/")
            repository, _, tag = rest.rpartition(":")
            values = deep_merge(values, _nested(path, {"registry": registry, "repository": repository, "tag": tag}))
    if lab.offline:
        for path, version in OFFLINE_VERSIONS.items():
            values = deep_merge(values, _nested(path, version))
        for off, _, _ in offline_off(lab):
            values = deep_merge(values, off)
    return values


def _nested(path: tuple[str, ...], leaf) -> dict:
    for key in reversed(path):
        leaf = {key: leaf}
    return leaf


def enabled(rel: Release, component: str) -> bool:
    """Whether the release runs a component the chart turns on by default (its values, offline's included)."""
    return (load_values(rel).get(component) or {}).get("enabled", True) is not False


def grafana_on(rel: Release) -> bool:
    return enabled(rel, "grafana")


def grafana_off_reason(lab: Lab) -> str:
    if lab.offline:
        return f"Grafana is off offline: {OFFLINE_OFF[0][2]}"
    return "Grafana is off in this lab's values (grafana.enabled: false)"


def offline_step(lab: Lab) -> Step:
    """Says what offline mode turned off in kube-prometheus-stack, and why (nothing to change)."""
    def check(ctx):
        return ok("; ".join(f"{what} off: {why}" for _, what, why in offline_off(lab))
                  + "; the rest keeps the lab's values, with kindlab's images")

    return Step(f"{RELEASE_NAME} offline values", check)


def served(rel: Release) -> tuple[str, ...]:
    """The Services that must answer: Prometheus, and Grafana where it runs."""
    return (PROMETHEUS_SERVICE, GRAFANA_SERVICE) if grafana_on(rel) else (PROMETHEUS_SERVICE,)


# --- the Grafana admin secret ------------------------------------------------
def admin_secret_step(lab: Lab, namespace: str = NAMESPACE, needed: str = "") -> Step:
    """Secret grafana-admin with a random password: created when absent, never rotated.

    `needed`: why there is no Grafana to read it (the step is then skipped with that reason).
    """
    def read(ctx):
        from kubernetes.client.exceptions import ApiException
        try:
            return ctx.kube.core.read_namespaced_secret(ADMIN_SECRET, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def missing_keys(secret) -> list[str]:
        data = secret.data or {}
        return [k for k in (ADMIN_USER_KEY, ADMIN_PASSWORD_KEY) if not data.get(k)]

    def check(ctx):
        if needed:
            return skip(f"no Grafana admin password needed: {needed}")
        secret = read(ctx)
        if secret is None:
            return change(f"create secret {namespace}/{ADMIN_SECRET} with a random admin password")
        missing = missing_keys(secret)
        if missing:
            return change(f"add {', '.join(missing)} to secret {namespace}/{ADMIN_SECRET}")
        return ok(f"secret {namespace}/{ADMIN_SECRET} exists (kept as it is; `invoke monitoring.password` shows it)")

    def apply(ctx):
        from kubernetes.client.exceptions import ApiException
        wanted = {ADMIN_USER_KEY: ADMIN_USER, ADMIN_PASSWORD_KEY: secrets.token_urlsafe(24)}
        secret = read(ctx)
        if secret is None:
            body = {"metadata": {"name": ADMIN_SECRET, "labels": {"app.kubernetes.io/managed-by": "kindlab"}},
                    "type": "Opaque", "stringData": wanted}
            try:
                ctx.kube.core.create_namespaced_secret(namespace, body)
            except ApiException as exc:
                if exc.status != 409:  # made meanwhile: keep that one
                    raise
            return f"created secret {namespace}/{ADMIN_SECRET} (`invoke monitoring.password` shows the password)"
        missing = missing_keys(secret)
        ctx.kube.core.patch_namespaced_secret(ADMIN_SECRET, namespace,
                                              {"stringData": {k: wanted[k] for k in missing}})
        return f"added {', '.join(missing)} to secret {namespace}/{ADMIN_SECRET}"

    return Step(f"{RELEASE_NAME} grafana admin secret", check, apply)


def password(lab: Lab, kube=None, namespace: str = NAMESPACE) -> str:
    """Grafana's admin password, read with the Kubernetes client and decoded here."""
    from kubernetes.client.exceptions import ApiException
    if kube is None:
        from .core.kube import Kube
        kube = Kube(lab.kubeconfig, lab.context)
    try:
        secret = kube.core.read_namespaced_secret(ADMIN_SECRET, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise StepFailed(f"no secret {namespace}/{ADMIN_SECRET} on {lab.context}: "
                             "run `invoke monitoring.install` first") from None
        raise
    encoded = (secret.data or {}).get(ADMIN_PASSWORD_KEY)
    if not encoded:
        raise StepFailed(f"secret {namespace}/{ADMIN_SECRET} has no {ADMIN_PASSWORD_KEY}: "
                         "rerun `invoke monitoring.install` to add one")
    return base64.b64decode(encoded).decode("utf-8")


# --- install / uninstall -----------------------------------------------------
def install_steps(lab: Lab, rel: Release | None = None) -> list[Step]:
    """Repository, namespace, admin secret, CRDs (server-side), the release, Prometheus (and Grafana) serving.

    With kindlab's images (offline) they are loaded into the kind nodes first.
    """
    rel = rel or release(lab)
    refs = [ref for ref in (images.for_part(lab, name) for name in offline_images(lab)) if ref]
    before = [offline_step(lab)] if lab.offline else []
    before += providers.of(lab).images_steps(RELEASE_NAME, refs)
    secret = admin_secret_step(lab, rel.namespace, needed="" if grafana_on(rel) else grafana_off_reason(lab))
    return [*before, *release_steps(lab, rel, prepare=[secret]), serving_step(lab, rel)]


def serving_step(lab: Lab, rel: Release) -> Step:
    """Until the Services have a ready endpoint: the operator makes Prometheus only after the release."""
    namespace, services = rel.namespace, served(rel)
    # what the operator makes pods from, some time after the release (Alertmanager unless it is off)
    made_by_the_operator = ("prometheuses", "alertmanagers") if enabled(rel, "alertmanager") else ("prometheuses",)

    def check(ctx):
        reason = providers.of(lab).operator_unavailable("prometheus-operator", ctx.sh)
        if reason:
            return skip(reason)
        missing = [s for s in services if not ctx.kube.ready_endpoints(namespace, s)]
        return unknown(f"ready endpoints for {', '.join(missing)}") if missing else ok()

    def wait(ctx):
        from .core.kube import Verdict, explain

        for plural in made_by_the_operator:
            ctx.kube.wait_reconciled("monitoring.coreos.com", "v1", plural, namespace,
                                     operator="prometheus-operator", say=ctx.say)

        def evaluate():
            missing = [s for s in services if not ctx.kube.ready_endpoints(namespace, s)]
            pods = [p for p in ctx.kube.core.list_namespaced_pod(namespace).items if p.status.phase != "Succeeded"]
            _, progress, failure = explain(pods, len(pods), "monitoring", lab.context, namespace)
            if not missing:
                return Verdict(True, f"{' and '.join(services)} {'have' if len(services) > 1 else 'has'} "
                                     "ready endpoints")
            return Verdict(False, f"no ready endpoint yet for {', '.join(missing)}; {progress}", failure)

        ctx.kube.wait_for("monitoring services", evaluate,
                          [(ctx.kube.core.list_namespaced_pod, {"namespace": namespace})],
                          say=ctx.say)
        # the operator's StatefulSets count too, now that they exist
        done = ctx.kube.wait_namespace_ready(namespace, say=ctx.say, what="monitoring")
        return done if GRAFANA_SERVICE in services else f"{done} ({grafana_off_reason(lab)})"

    return Step(f"{RELEASE_NAME} {' and '.join(_named(services))} serving", check, wait=wait)


def _named(services: tuple[str, ...]) -> list[str]:
    return [{PROMETHEUS_SERVICE: "Prometheus", GRAFANA_SERVICE: "Grafana"}[s] for s in services]


def uninstall_steps(lab: Lab, rel: Release | None = None) -> list[Step]:
    """The release, then its namespace (and with it the admin secret); the CRDs stay."""
    return helm_uninstall_steps(lab, rel or release(lab), delete_namespace=True)


# --- verify -----------------------------------------------------------------
def verify_steps(lab: Lab, namespace: str = NAMESPACE) -> list[Step]:
    """Services with ready endpoints; on a real cluster, every target up and Grafana healthy (where it runs)."""
    rel = release(lab)
    services = served(rel)

    def endpoints(ctx):
        from kubernetes.client.exceptions import ApiException
        found = []
        for service in services:
            try:
                ctx.kube.core.read_namespaced_service(service, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    raise StepFailed(f"service {namespace}/{service} not found: run `invoke monitoring.install`") \
                        from None
                raise
            ready = ctx.kube.ready_endpoints(namespace, service)
            if not ready:
                raise StepFailed(f"service {namespace}/{service} has no ready endpoint: its pods are not Ready; "
                                 f"kubectl --context {lab.context} -n {namespace} get pods")
            found.append(f"{service}: {ready} ready endpoint(s)")
        return "; ".join(found)

    def http_check(ctx):
        return ok() if lab.can.runs_containers else skip(NO_CONTAINERS)

    def grafana_check(ctx):
        return http_check(ctx) if GRAFANA_SERVICE in services else skip(grafana_off_reason(lab))

    def targets(ctx):
        with forwarded(ctx, namespace, f"svc/{PROMETHEUS_SERVICE}", PROMETHEUS_PORT) as base:
            judge = TargetJudge(expected=expected_jobs(rel))
            return poll_targets(lambda: judge.judge(*_read_targets(base)), ctx.deadline.left(), ctx.say)

    def health(ctx):
        with forwarded(ctx, namespace, f"svc/{GRAFANA_SERVICE}", GRAFANA_PORT) as base:
            return poll_until_healthy(lambda: _grafana_problems(base), ctx.deadline.left(), ctx.say,
                                      what="Grafana")

    return [action("monitoring services have ready endpoints", endpoints),
            action("prometheus targets up", targets, check=http_check),
            action("grafana healthy", health, check=grafana_check)]


def _read_targets(base: str) -> tuple[dict, dict | None]:
    """Prometheus' active targets, and its scrape pools (None from a Prometheus too old to list them)."""
    _, body = probes.http_get(f"{base}/api/v1/targets?state=active", timeout=10, attempts=5)
    try:
        _, pools = probes.http_get(f"{base}/api/v1/scrape_pools", timeout=10, attempts=2)
    except probes.HttpGetError as exc:
        if exc.status != 404:
            raise
        return json.loads(body), None
    return json.loads(body), json.loads(pools)


EMPTY_POOL_GRACE_S = 10.0  # Prometheus applies what service discovery found every 5 s


@dataclass
class Targets:
    failures: list[str]  # problems that waiting will not cure
    waiting: list[str]   # targets not scraped yet, or not since the check began
    healthy: str = ""


# Scrape jobs the release must have a target of, where it runs the component (kube-prometheus-stack's
# ServiceMonitor names kube-state-metrics' job after its Service's app.kubernetes.io/name).
EXPECTED_JOBS = (("kubeStateMetrics", "kube-state-metrics"),)


def expected_jobs(rel: Release) -> tuple[str, ...]:
    return tuple(job for component, job in EXPECTED_JOBS if enabled(rel, component))


class TargetJudge:
    """Which target problems are real, over successive reads of one Prometheus.

    A target never scraped yet is waited for. A target down in a scrape made
    after the check began is named at once: it is down now (one scrape interval
    at most after it went down). Down only in an older scrape (its pod turned
    Ready since), it gets its next scrape. A scrape pool (one endpoint of a
    ServiceMonitor, say) with no target at all is named once it has stayed
    empty for EMPTY_POOL_GRACE_S: what it scrapes is gone (node-exporter
    scheduled nowhere, a Deployment scaled to 0). A job in `expected` with no
    target at all is waited for: the release runs it, so Prometheus must
    scrape it (kube-state-metrics, whose series the pod graphs read).
    """

    def __init__(self, clock=time.monotonic, now=None, expected: tuple[str, ...] = ()):
        from datetime import datetime, timezone

        self.clock = clock
        self.began = now or datetime.now(timezone.utc)
        self.empty_since: dict[str, float] = {}
        self.expected = expected

    def judge(self, targets_json: dict, pools_json: dict | None) -> Targets:
        from datetime import datetime

        probes.prometheus_target_problems(targets_json)  # the answer's shape, or ValueError
        active = targets_json["data"]["activeTargets"]
        failures, waiting = [], []
        for target in active:
            if target["health"] == "up":
                continue
            last = datetime.fromisoformat(str(target.get("lastScrape") or "0001-01-01T00:00:00Z"))
            fresh = target["health"] == "down" and last >= self.began
            (failures if fresh else waiting).append(probes.describe_target(target))
        pools = ((pools_json or {}).get("data") or {}).get("scrapePools") or []
        seen = {t.get("scrapePool") for t in active}
        now = self.clock()
        for pool in pools:
            if pool in seen:
                self.empty_since.pop(pool, None)
                continue
            since = self.empty_since.setdefault(pool, now)
            problem = (f"scrape pool {pool} has no target: nothing it scrapes is running (a ServiceMonitor's "
                       "Service without endpoints, a DaemonSet scheduled nowhere)")
            (failures if now - since >= EMPTY_POOL_GRACE_S else waiting).append(problem)
        jobs: dict[str, int] = {}
        for target in active:
            job = (target.get("labels") or {}).get("job", "?")
            jobs[job] = jobs.get(job, 0) + 1
        waiting += [f"no target of job {job} yet: the release runs {job}, and Prometheus has not found it "
                    "(its Service and ServiceMonitor)" for job in self.expected if job not in jobs]
        healthy = f"all {len(active)} active Prometheus targets up" + (
            f", in {len(pools)} scrape pools" if pools else "") + (
            ": " + ", ".join(job + (f" ({n})" if n > 1 else "") for job, n in sorted(jobs.items())) if jobs else "")
        return Targets(failures, waiting, healthy)


def poll_targets(read: Callable[[], Targets], timeout: float, say: Callable[[str], None], interval: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep) -> str:
    """Until every target is up: a target that is down now fails at once, one not scraped yet is waited for."""
    def judged() -> tuple[list[str], str]:
        found = read()
        if found.failures:
            raise StepFailed(f"Prometheus targets: {len(found.failures)} down: {_shown(found.failures)}")
        return found.waiting, found.healthy

    return poll_until_healthy(judged, timeout, say, "Prometheus targets", interval=interval, sleep=sleep)


def _shown(problems: list[str]) -> str:
    return "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")


def _grafana_problems(base: str) -> tuple[list[str], str]:
    try:
        _, body = probes.http_get(f"{base}/api/health", timeout=10, attempts=5)
    except probes.HttpGetError as exc:
        if exc.body is None:
            raise
        body = exc.body  # Grafana says what is wrong in its 503 answer
    answer = json.loads(body)
    return probes.grafana_health_problems(answer), f"Grafana {answer.get('version', '')} healthy, database ok"


def poll_until_healthy(read: Callable[[], tuple[list[str], str]], timeout: float, say: Callable[[str], None],
                       what: str, interval: float = 5.0, sleep: Callable[[float], None] = time.sleep) -> str:
    """Ask again until there are no problems (a fresh target is 'unknown' until first scraped)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            problems, healthy = read()
        except (probes.HttpGetError, ValueError) as exc:
            problems, healthy = [str(exc)], ""
        if not problems:
            return healthy
        if time.monotonic() >= deadline:
            raise StepFailed(f"{what}: {len(problems)} problem(s) after {timeout:.0f}s: {_shown(problems)}")
        say(f"{what}: {len(problems)} problem(s), asking again: {problems[0][:100]}")
        sleep(interval)


def _require_services(lab: Lab, kube, services: tuple[str, ...], namespace: str = NAMESPACE) -> None:
    from kubernetes.client.exceptions import ApiException
    if kube is None:
        from .core.kube import Kube
        kube = Kube(lab.kubeconfig, lab.context)
    for service in services:
        try:
            kube.core.read_namespaced_service(service, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise StepFailed(f"service {namespace}/{service} not found on {lab.context}: "
                                 "run `invoke monitoring.install` first") from None
            raise


def dashboard_forwards(lab: Lab, namespace: str = NAMESPACE, grafana_port: int = LOCAL_GRAFANA_PORT,
                       prometheus_port: int = LOCAL_PROMETHEUS_PORT,
                       services: tuple[str, ...] = (GRAFANA_SERVICE, PROMETHEUS_SERVICE)) -> list[Forward]:
    def argv(service: str, local: int, remote: int) -> list[str]:
        return ["kubectl", *lab.cluster_flags(), "-n", namespace, "port-forward", "--address", "127.0.0.1",
                f"svc/{service}", f"{local}:{remote}"]

    forwards = {GRAFANA_SERVICE: Forward("Grafana", argv(GRAFANA_SERVICE, grafana_port, GRAFANA_PORT), grafana_port),
                PROMETHEUS_SERVICE: Forward("Prometheus", argv(PROMETHEUS_SERVICE, prometheus_port, PROMETHEUS_PORT),
                                            prometheus_port)}
    return [forward for service, forward in forwards.items() if service in services]


def dashboards(lab: Lab, *, shell=None, kube=None, out: Callable[[str], None] = print,
               stop: threading.Event | None = None, grafana_port: int = LOCAL_GRAFANA_PORT,
               prometheus_port: int = LOCAL_PROMETHEUS_PORT) -> None:
    """Forward Grafana to 127.0.0.1:3000 and Prometheus to :9090 until Ctrl-C; restart a forward that drops.

    Where Grafana is off (offline: no image for it), Prometheus alone, and the output says why.
    """
    if not lab.can.runs_containers:
        raise StepFailed(NO_CONTAINERS.replace("these checks need", "dashboards need"))
    services = served(release(lab))
    own_shell = shell is None
    if own_shell:
        from .core.cli import make_shell
        shell = make_shell(lab)
    if kube is None and lab.host:  # the client runs here: the host's API server through the SSH tunnel
        from .core.kubeconfig import tunnel
        tunnel(lab, shell)
    _require_services(lab, kube, services)
    supervisor = Supervisor(shell, dashboard_forwards(lab, grafana_port=grafana_port,
                                                      prometheus_port=prometheus_port, services=services), out)
    try:
        supervisor.start()
        if GRAFANA_SERVICE in services:
            out(f"Grafana     http://127.0.0.1:{grafana_port}  (user {ADMIN_USER}; password: "
                "`invoke monitoring.password`)")
        else:
            out(f"no Grafana to forward: {grafana_off_reason(lab)}")
        out(f"Prometheus  http://127.0.0.1:{prometheus_port}"
            f"{getattr(shell, 'note', lambda url: '')(f'http://127.0.0.1:{prometheus_port}')}")
        out("graphs of this lab (Prometheus' web UI):")
        links = graph_links(f"http://127.0.0.1:{prometheus_port}")
        for title, url in links:
            out(f"  {title:<{max(len(t) for t, _ in links)}}  {url}")
        out("forwarding until Ctrl-C")
        supervisor.run(stop or threading.Event())
        out("port-forwards stopped")
    finally:
        supervisor.stop()
        if own_shell:
            shell.close()


def graphs() -> tuple[tuple[str, str], ...]:
    """(title, PromQL) of what a user of this lab looks at first: the nodes (node-exporter) and the pods
    (kube-state-metrics), nginx's and Ray's among them, found by their parts' namespaces."""
    from . import nginx as nginx_part, ray as ray_part

    (nginx,), ray = nginx_part.PART.namespaces, "|".join(ray_part.PART.namespaces)
    return (
        ("node CPU busy (cores)", 'sum by (instance) (rate(node_cpu_seconds_total{mode!="idle"}[2m]))'),
        ("node memory used", "node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes"),
        ("pod restarts", "sum by (namespace, pod) (kube_pod_container_status_restarts_total)"),
        ("nginx's pods Ready",
         f'sum(kube_pod_status_ready{{namespace="{nginx}", pod=~"nginx-.*", condition="true"}})'),
        # the operator's, the head's and the worker's
        ("Ray's pods by phase", f'sum by (namespace, phase) (kube_pod_status_phase{{namespace=~"{ray}"}} == 1)'),
    )


ALL_GRAPHS = "all of them, one page"


def graph_links(base: str, range_: str = "1h") -> list[tuple[str, str]]:
    """Each graph as a link to Prometheus 3's query page (/query?g0.expr=...&g0.tab=graph), `range_` wide,
    then one page with every graph (panels g0, g1, ...)."""
    from urllib.parse import urlencode

    def panels(exprs) -> str:
        return f"{base}/query?" + urlencode([(f"g{i}.{key}", value) for i, expr in enumerate(exprs)
                                             for key, value in (("expr", expr), ("tab", "graph"),
                                                                ("range_input", range_))])

    shown = graphs()
    return [*((title, panels([expr])) for title, expr in shown), (ALL_GRAPHS, panels(e for _, e in shown))]


def addresses(lab: Lab) -> list[tuple[str, str, str]]:
    grafana = [("Grafana", f"http://127.0.0.1:{LOCAL_GRAFANA_PORT}",
                f"invoke monitoring.dashboards; user {ADMIN_USER}, password: invoke monitoring.password")]
    return [*(grafana if grafana_on(release(lab)) else []),
            ("Prometheus", f"http://127.0.0.1:{LOCAL_PROMETHEUS_PORT}", "invoke monitoring.dashboards")]


PART = Part(
    name="monitoring", namespaces=(NAMESPACE,), install=lambda lab, parts: install_steps(lab),
    uninstall=lambda lab, parts: uninstall_steps(lab),
    help=("Install kube-prometheus-stack (Prometheus and its UI, Grafana; offline no Grafana) with Helm and wait "
          "until it serves.",
          "Uninstall the monitoring release and delete its namespace (the CRDs stay)."),
    addresses=addresses,
    memory_mib=2048, cpus=1, requests=(250, 600),  # the chart's 120m / 240Mi, and the operator's Prometheus
    # the images it always runs offline; those from source archives are loaded where the archives are at hand
    images=tuple(n for n in OFFLINE_IMAGES if n not in {name for name, _, _ in FROM_ARCHIVES}),
    releases=lambda lab: {"monitoring": release(lab)})


__all__ = ["install_steps", "uninstall_steps", "verify_steps", "password", "dashboards", "release",
           "admin_secret_step", "Supervisor", "Forward", "CHART_VERSION"]

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
from pathlib import Path
from typing import Callable

from . import cluster as cluster_play, probes
from .core.helm import Release, local_release, release_steps, uninstall_steps as helm_uninstall_steps
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
    """The kube-prometheus-stack release; `chart` (or kindlab.charts.monitoring) a local chart instead."""
    base = Release(name=RELEASE_NAME, namespace=NAMESPACE, chart=CHART, version=CHART_VERSION,
                   repo_name=REPO[0], repo_url=REPO[1], values_files=(VALUES,), crds_from_chart=True,
                   min_pods=2)
    return local_release(base, chart or lab.local_chart("monitoring"))


# --- the Grafana admin secret ------------------------------------------------
def admin_secret_step(lab: Lab, namespace: str = NAMESPACE) -> Step:
    """Secret grafana-admin with a random password: created when absent, never rotated."""
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
    """Repository, namespace, admin secret, CRDs (server-side), the release, Prometheus and Grafana serving."""
    rel = rel or release(lab)
    return [*release_steps(lab, rel, prepare=[admin_secret_step(lab, rel.namespace)]),
            serving_step(lab, rel.namespace)]


def serving_step(lab: Lab, namespace: str = NAMESPACE) -> Step:
    """Until both Services have a ready endpoint: the operator makes Prometheus only after the release."""
    def check(ctx):
        reason = cluster_play.operator_unavailable(lab, "prometheus-operator")
        if reason:
            return skip(reason)
        missing = [s for s in (PROMETHEUS_SERVICE, GRAFANA_SERVICE) if not ctx.kube.ready_endpoints(namespace, s)]
        return unknown(f"ready endpoints for {', '.join(missing)}") if missing else ok()

    def wait(ctx):
        from .core.kube import Verdict, explain

        ctx.kube.wait_reconciled("monitoring.coreos.com", "v1", "prometheuses", namespace,
                                 operator="prometheus-operator", timeout=lab.timeout, say=ctx.say)

        def evaluate():
            missing = [s for s in (PROMETHEUS_SERVICE, GRAFANA_SERVICE) if not ctx.kube.ready_endpoints(namespace, s)]
            pods = [p for p in ctx.kube.core.list_namespaced_pod(namespace).items if p.status.phase != "Succeeded"]
            _, progress, failure = explain(pods, len(pods), "monitoring", lab.context, namespace)
            if not missing:
                return Verdict(True, f"{PROMETHEUS_SERVICE} and {GRAFANA_SERVICE} have ready endpoints")
            return Verdict(False, f"no ready endpoint yet for {', '.join(missing)}; {progress}", failure)

        ctx.kube.wait_for("monitoring services", evaluate,
                          [(ctx.kube.core.list_namespaced_pod, {"namespace": namespace})],
                          timeout=lab.timeout, say=ctx.say)
        # the operator's StatefulSets count too, now that they exist
        return ctx.kube.wait_namespace_ready(namespace, timeout=lab.timeout, say=ctx.say, what="monitoring")

    return Step(f"{RELEASE_NAME} Prometheus and Grafana serving", check, wait=wait)


def uninstall_steps(lab: Lab, rel: Release | None = None) -> list[Step]:
    """The release, then its namespace (and with it the admin secret); the CRDs stay."""
    return helm_uninstall_steps(lab, rel or release(lab), delete_namespace=True)


# --- verify -----------------------------------------------------------------
def verify_steps(lab: Lab, namespace: str = NAMESPACE) -> list[Step]:
    """Services with ready endpoints; on a real cluster, every target up and Grafana healthy."""
    def endpoints(ctx):
        from kubernetes.client.exceptions import ApiException
        found = []
        for service in (PROMETHEUS_SERVICE, GRAFANA_SERVICE):
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

    def targets(ctx):
        with forwarded(ctx, namespace, f"svc/{PROMETHEUS_SERVICE}", PROMETHEUS_PORT) as base:
            return poll_until_healthy(lambda: _target_problems(base), min(lab.timeout, 180.0), ctx.say,
                                      what="Prometheus targets")

    def health(ctx):
        with forwarded(ctx, namespace, f"svc/{GRAFANA_SERVICE}", GRAFANA_PORT) as base:
            return poll_until_healthy(lambda: _grafana_problems(base), min(lab.timeout, 120.0), ctx.say,
                                      what="Grafana")

    return [action("monitoring services have ready endpoints", endpoints),
            action("prometheus targets up", targets, check=http_check),
            action("grafana healthy", health, check=http_check)]


def _target_problems(base: str) -> tuple[list[str], str]:
    status, body = probes.http_get(f"{base}/api/v1/targets?state=active", timeout=10, attempts=5)
    answer = json.loads(body)
    problems = probes.prometheus_target_problems(answer)
    count = len(answer["data"]["activeTargets"])
    return problems, f"all {count} active Prometheus targets up"


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
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise StepFailed(f"{what}: {len(problems)} problem(s) after {timeout:.0f}s: {shown}")
        say(f"{what}: {len(problems)} problem(s), asking again: {problems[0][:100]}")
        sleep(interval)


def _require_services(lab: Lab, kube, namespace: str = NAMESPACE) -> None:
    from kubernetes.client.exceptions import ApiException
    if kube is None:
        from .core.kube import Kube
        kube = Kube(lab.kubeconfig, lab.context)
    for service in (GRAFANA_SERVICE, PROMETHEUS_SERVICE):
        try:
            kube.core.read_namespaced_service(service, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise StepFailed(f"service {namespace}/{service} not found on {lab.context}: "
                                 "run `invoke monitoring.install` first") from None
            raise


def dashboard_forwards(lab: Lab, namespace: str = NAMESPACE, grafana_port: int = LOCAL_GRAFANA_PORT,
                       prometheus_port: int = LOCAL_PROMETHEUS_PORT) -> list[Forward]:
    def argv(service: str, local: int, remote: int) -> list[str]:
        return ["kubectl", "--kubeconfig", str(lab.kubeconfig), "--context", lab.context, "-n", namespace,
                "port-forward", "--address", "127.0.0.1", f"svc/{service}", f"{local}:{remote}"]

    return [Forward("Grafana", argv(GRAFANA_SERVICE, grafana_port, GRAFANA_PORT), grafana_port),
            Forward("Prometheus", argv(PROMETHEUS_SERVICE, prometheus_port, PROMETHEUS_PORT), prometheus_port)]


def dashboards(lab: Lab, *, shell=None, kube=None, out: Callable[[str], None] = print,
               stop: threading.Event | None = None, grafana_port: int = LOCAL_GRAFANA_PORT,
               prometheus_port: int = LOCAL_PROMETHEUS_PORT) -> None:
    """Forward Grafana to 127.0.0.1:3000 and Prometheus to :9090 until Ctrl-C; restart a forward that drops."""
    if not lab.can.runs_containers:
        raise StepFailed(NO_CONTAINERS.replace("these checks need", "dashboards need"))
    _require_services(lab, kube)
    own_shell = shell is None
    if own_shell:
        from .core.commands import make_shell
        shell = make_shell(lab.tools_dir, verbose=lab.verbose)
    supervisor = Supervisor(shell, dashboard_forwards(lab, grafana_port=grafana_port,
                                                      prometheus_port=prometheus_port), out)
    try:
        supervisor.start()
        out(f"Grafana     http://127.0.0.1:{grafana_port}  (user {ADMIN_USER}; password: `invoke monitoring.password`)")
        out(f"Prometheus  http://127.0.0.1:{prometheus_port}")
        out("forwarding until Ctrl-C")
        supervisor.run(stop or threading.Event())
        out("port-forwards stopped")
    finally:
        supervisor.stop()
        if own_shell:
            shell.close()


PART = Part(
    name="monitoring", namespaces=(NAMESPACE,), install=install_steps, uninstall=uninstall_steps,
    help=("Install kube-prometheus-stack (Prometheus, Grafana) with Helm and wait until both serve.",
          "Uninstall the monitoring release and delete its namespace (the CRDs stay)."),
    addresses=lambda lab: [
        ("Grafana", f"http://127.0.0.1:{LOCAL_GRAFANA_PORT}",
         f"invoke monitoring.dashboards; user {ADMIN_USER}, password: invoke monitoring.password"),
        ("Prometheus", f"http://127.0.0.1:{LOCAL_PROMETHEUS_PORT}", "invoke monitoring.dashboards")],
    memory_mib=2048, cpus=1, requests=(250, 600),  # the chart's 120m / 240Mi, and the operator's Prometheus
    offline_blocker="Grafana's image cannot be built from package registries (the Go module proxy refuses "
                    "github.com/grafana/grafana)")


__all__ = ["install_steps", "uninstall_steps", "verify_steps", "password", "dashboards", "release",
           "admin_secret_step", "Supervisor", "Forward", "CHART_VERSION"]

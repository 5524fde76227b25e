"""The monitoring play without a cluster: its values, the admin secret, verify and the port-forward supervisor."""
import base64
import io
import socket
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from playbooks import monitoring
from playbooks.core.runner import StepContext
from playbooks.core.settings import Lab
from playbooks.core.steps import StepFailed

VALUES = yaml.safe_load(monitoring.VALUES.read_text())


# --- the values file ------------------------------------------------------------
@pytest.mark.parametrize("component", ["kubeEtcd", "kubeControllerManager", "kubeScheduler", "kubeProxy"])
def test_control_plane_scrapers_kind_cannot_reach_are_disabled(component):
    assert VALUES[component]["enabled"] is False


def test_grafana_reads_its_admin_from_the_secret_kindlab_makes():
    admin = VALUES["grafana"]["admin"]
    assert admin == {"existingSecret": monitoring.ADMIN_SECRET, "userKey": monitoring.ADMIN_USER_KEY,
                     "passwordKey": monitoring.ADMIN_PASSWORD_KEY}
    assert "adminPassword" not in VALUES["grafana"]  # no password in a file or in helm's argv


def test_service_names_and_ports_match_what_dashboards_and_verify_use():
    assert VALUES["prometheus"]["service"]["port"] == monitoring.PROMETHEUS_PORT == 9090
    assert VALUES["grafana"]["service"]["port"] == monitoring.GRAFANA_PORT == 80
    assert f"{VALUES['fullnameOverride']}-prometheus" == monitoring.PROMETHEUS_SERVICE
    assert VALUES["grafana"]["fullnameOverride"] == monitoring.GRAFANA_SERVICE


def test_every_workload_asks_for_modest_resources():
    requests = [VALUES["prometheus"]["prometheusSpec"]["resources"]["requests"],
                VALUES["alertmanager"]["alertmanagerSpec"]["resources"]["requests"],
                VALUES["prometheusOperator"]["resources"]["requests"],
                VALUES["grafana"]["resources"]["requests"],
                VALUES["kube-state-metrics"]["resources"]["requests"],
                VALUES["prometheus-node-exporter"]["resources"]["requests"]]
    for request in requests:
        assert set(request) == {"cpu", "memory"}
        assert int(request["memory"].removesuffix("Mi")) <= 256


def test_the_release_pins_the_chart_and_applies_crds_itself():
    rel = monitoring.release(Lab())
    assert (rel.name, rel.namespace, rel.chart) == ("monitoring", "monitoring",
                                                    "prometheus-community/kube-prometheus-stack")
    assert rel.version == monitoring.CHART_VERSION and rel.version.split(".")[0] in ("79", "80")
    assert rel.repo_url == "https://prometheus-community.github.io/helm-charts"
    assert rel.crds_from_chart and rel.values_files == (monitoring.VALUES,)


def test_a_local_chart_replaces_the_repository():
    rel = monitoring.release(Lab(), chart="/charts/kube-prometheus-stack-79.9.0.tgz")
    assert rel.chart == "/charts/kube-prometheus-stack-79.9.0.tgz" and rel.repo_name is None
    configured = monitoring.release(replace(Lab(), charts=(("monitoring", "/c/kps.tgz"),)))
    assert configured.chart == "/c/kps.tgz" and configured.version is None
    names = [s.name for s in monitoring.install_steps(Lab(), configured)]
    assert names == ["monitoring namespace monitoring", "monitoring grafana admin secret", "monitoring CRDs",
                     "monitoring release", "monitoring Prometheus and Grafana serving"]


# --- the admin secret -------------------------------------------------------------
class FakeCore:
    def __init__(self, secret_data=None):
        self.secret_data = secret_data  # None: no secret
        self.created, self.patched = [], []

    def read_namespaced_secret(self, name, namespace):
        if self.secret_data is None:
            raise ApiException(status=404)
        return type("Secret", (), {"data": dict(self.secret_data)})()

    def create_namespaced_secret(self, namespace, body):
        self.created.append((namespace, body))
        self.secret_data = {k: base64.b64encode(v.encode()).decode() for k, v in body["stringData"].items()}

    def patch_namespaced_secret(self, name, namespace, body):
        self.patched.append(body)
        for key, value in body["stringData"].items():
            self.secret_data[key] = base64.b64encode(value.encode()).decode()

    def read_namespaced_service(self, name, namespace):
        return object()


class FakeKube:
    def __init__(self, core):
        self.core = core


def secret_ctx(core):
    ctx = StepContext(Lab(), shell=None, kube_factory=lambda: FakeKube(core))
    return ctx


def test_the_secret_is_created_once_with_a_random_password_never_shown():
    core = FakeCore()
    step = monitoring.admin_secret_step(Lab())
    ctx = secret_ctx(core)
    assert step.check(ctx).needs_change
    detail = step.apply(ctx)
    (namespace, body), = core.created
    password = body["stringData"]["admin-password"]
    assert namespace == "monitoring" and body["metadata"]["name"] == "grafana-admin"
    assert body["stringData"]["admin-user"] == "admin" and len(password) >= 24
    assert password not in detail and password not in step.check(ctx).detail
    assert step.check(ctx).state == "ok"  # a rerun never rotates it
    assert monitoring.password(Lab(), kube=FakeKube(core)) == password


def test_two_labs_get_different_passwords():
    first, second = FakeCore(), FakeCore()
    monitoring.admin_secret_step(Lab()).apply(secret_ctx(first))
    monitoring.admin_secret_step(Lab()).apply(secret_ctx(second))
    assert first.secret_data["admin-password"] != second.secret_data["admin-password"]


def test_a_secret_missing_its_password_key_gets_only_that_key():
    core = FakeCore({"admin-user": base64.b64encode(b"root").decode()})
    step = monitoring.admin_secret_step(Lab())
    assert step.check(secret_ctx(core)).detail == "add admin-password to secret monitoring/grafana-admin"
    step.apply(secret_ctx(core))
    assert list(core.patched[0]["stringData"]) == ["admin-password"]
    assert base64.b64decode(core.secret_data["admin-user"]) == b"root"


def test_password_without_the_secret_says_to_install_first():
    with pytest.raises(StepFailed, match="run `invoke monitoring.install` first"):
        monitoring.password(Lab(), kube=FakeKube(FakeCore()))


# --- verify -----------------------------------------------------------------------
def test_on_kwok_the_http_checks_are_skipped_with_the_reason():
    lab = Lab(provider="kwok", cluster="t")
    steps = monitoring.verify_steps(lab)
    checks = [s.check(StepContext(lab, None)) for s in steps[1:]]
    assert [c.state for c in checks] == ["skipped", "skipped"]
    assert "runs no containers" in checks[0].detail and "need a real cluster" in checks[0].detail
    assert monitoring.verify_steps(Lab())[1].check(StepContext(Lab(), None)).state == "ok"  # kind: they run


def test_poll_until_healthy_asks_again_until_the_problems_are_gone():
    answers = iter([(["target x has unknown health; it has not been scraped yet"], ""), ([], "all 3 up")])
    said = []
    assert monitoring.poll_until_healthy(lambda: next(answers), 60, said.append, "Prometheus targets",
                                         sleep=lambda s: None) == "all 3 up"
    assert "1 problem(s)" in said[0]


def test_poll_until_healthy_fails_naming_the_problems_at_the_deadline():
    with pytest.raises(StepFailed, match=r"Prometheus targets: 6 problem\(s\) after 0s: p0; p1; p2; p3; p4; and 1 more"):
        monitoring.poll_until_healthy(lambda: ([f"p{i}" for i in range(6)], ""), 0, lambda m: None,
                                      "Prometheus targets", sleep=lambda s: None)


# --- dashboards: the supervisor ------------------------------------------------------
class FakeProc:
    def __init__(self, exits_after=None, code=1, message=""):
        self.polls = 0
        self.exits_after = exits_after
        self.code = code
        self.stdout = io.StringIO("Forwarding from 127.0.0.1:3000 -> 3000\n")
        self.stderr = io.StringIO(message)
        self.terminated = False

    def poll(self):
        self.polls += 1
        if self.terminated or (self.exits_after is not None and self.polls > self.exits_after):
            return self.code
        return None

    def terminate(self):
        self.terminated = True

    def wait(self, timeout=None):
        return self.code

    def kill(self):
        self.terminated = True


class FakeShell:
    def __init__(self, procs_by_port):
        self.procs_by_port = procs_by_port
        self.spawned = []

    def spawn(self, argv):
        port = int(argv[-1].split(":")[0])
        proc = self.procs_by_port[port].pop(0)
        self.spawned.append((argv, proc))
        return proc

    def close(self):
        pass


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_forward_that_exits_is_restarted_and_all_are_ended_at_stop():
    lab = Lab(provider="kind", kubeconfig=Path("/k/config"))
    g, p = free_port(), free_port()
    dropped = FakeProc(exits_after=1, message="error: lost connection to pod\n")
    replacement, prometheus = FakeProc(), FakeProc()
    shell = FakeShell({g: [dropped, replacement], p: [prometheus]})
    clock = [0.0]
    said = []
    sup = monitoring.Supervisor(shell, monitoring.dashboard_forwards(lab, grafana_port=g, prometheus_port=p),
                                said.append, clock=lambda: clock[0], backoff=1.0)
    sup.start()
    sup.tick()  # both alive
    sup.tick()  # grafana's kubectl exited
    assert "Grafana port-forward exited (code 1: error: lost connection to pod); restarting in 1s" in said
    clock[0] = 0.5
    sup.tick()
    assert len(shell.spawned) == 2  # not yet: it waits its pause
    clock[0] = 1.5
    sup.tick()
    assert [proc for _, proc in shell.spawned] == [dropped, prometheus, replacement]
    argv = shell.spawned[0][0]
    assert argv[:5] == ["kubectl", "--kubeconfig", "/k/config", "--context", lab.context]
    assert argv[-3:] == ["127.0.0.1", "svc/kps-grafana", f"{g}:80"]
    sup.stop()
    assert replacement.terminated and prometheus.terminated


def test_the_pause_between_restarts_grows_while_a_forward_keeps_failing():
    lab = Lab(provider="kind")
    g, p = free_port(), free_port()
    shell = FakeShell({g: [FakeProc(exits_after=0) for _ in range(10)], p: [FakeProc()]})
    clock = [0.0]
    said = []
    sup = monitoring.Supervisor(shell, monitoring.dashboard_forwards(lab, grafana_port=g, prometheus_port=p),
                                said.append, clock=lambda: clock[0], backoff=1.0, backoff_max=3.0)
    sup.start()
    for _ in range(8):
        sup.tick()
        clock[0] += 5
    delays = [m.split("restarting in ")[1] for m in said if "restarting" in m]
    assert delays[:3] == ["1s", "2s", "3s"]


def test_a_busy_local_port_is_a_clear_error_before_anything_starts():
    lab = Lab(provider="kind")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        shell = FakeShell({})
        with pytest.raises(StepFailed, match=rf"local port\(s\) {port} \(Grafana\) already in use"):
            monitoring.dashboards(lab, shell=shell, kube=FakeKube(FakeCore()), out=lambda m: None,
                                  grafana_port=port, prometheus_port=free_port())
        assert shell.spawned == []


def until_forwarding():
    """What dashboards prints, its `out`, and a stop that ends it once it says it is forwarding."""
    stop = threading.Event()
    printed = []

    def out(message):
        printed.append(message)
        if message.startswith("forwarding until"):
            stop.set()

    return printed, out, stop


def test_dashboards_run_until_stopped_and_end_their_children():
    lab = Lab(provider="kind")
    g, p = free_port(), free_port()
    procs = {g: [FakeProc()], p: [FakeProc()]}
    shell = FakeShell(procs)
    printed, out, stop = until_forwarding()
    monitoring.dashboards(lab, shell=shell, kube=FakeKube(FakeCore()), out=out, stop=stop,
                          grafana_port=g, prometheus_port=p)
    assert printed[0].startswith(f"Grafana     http://127.0.0.1:{g}  (user admin")
    assert printed[1] == f"Prometheus  http://127.0.0.1:{p}" and printed[-1] == "port-forwards stopped"
    assert all(proc.terminated for _, proc in shell.spawned)


def test_dashboards_on_kwok_say_there_is_nothing_to_forward_to():
    with pytest.raises(StepFailed, match="runs no containers"):
        monitoring.dashboards(Lab(provider="kwok", cluster="t"), shell=FakeShell({}), out=lambda m: None)


def test_dashboards_before_install_name_the_missing_service():
    class NoServices(FakeCore):
        def read_namespaced_service(self, name, namespace):
            raise ApiException(status=404)

    with pytest.raises(StepFailed, match="service monitoring/kps-prometheus not found.*invoke monitoring.install"):
        monitoring.dashboards(Lab(provider="kind"), shell=FakeShell({}), kube=FakeKube(NoServices()),
                              out=lambda m: None)


# --- offline: kindlab's images, Grafana turned off (and what a missing source archive leaves out) ---------
@pytest.fixture
def archives_at_hand(monkeypatch):
    """kindlab.sources.monitoring names a folder with both archives (their checks: test_sources, test_images)."""
    from playbooks import images
    monkeypatch.setattr(images, "archive_missing", lambda lab, binary: None)


def image_of(values: dict) -> str:
    return f"{values['image']['registry']}/{values['image']['repository']}:{values['image']['tag']}"


def test_offline_turns_off_grafana_alone_and_runs_the_rest_on_kindlabs_images(archives_at_hand):
    from playbooks import images
    from playbooks.core.helm import load_values

    online = load_values(monitoring.release(Lab()))
    offline = load_values(monitoring.release(Lab(offline=True)))
    assert monitoring.offline_values(Lab()) == {} and online.get("grafana", {}).get("enabled", True)
    assert offline["grafana"]["enabled"] is False
    assert offline.get("kubeStateMetrics", {}).get("enabled", True) is not False
    hooks = offline["prometheusOperator"]["admissionWebhooks"]
    assert hooks.get("enabled", True) is not False and hooks["patch"].get("enabled", True) is not False
    assert offline["prometheusOperator"].get("tls", {}).get("enabled", True) is not False
    # the value keys kube-prometheus-stack 79.9.0 and its kube-state-metrics subchart read the images from
    assert image_of(offline["kube-state-metrics"]) == images.reference("kube-state-metrics")
    assert image_of(hooks["patch"]) == images.reference("kube-webhook-certgen")
    prometheus = offline["prometheus"]["prometheusSpec"]
    assert image_of(prometheus) == images.reference("prometheus")
    assert prometheus["version"] == "v3.7.3"  # not the hash-carrying tag
    # the lab's own values stay: everything online has the same value offline unless offline set it
    assert prometheus["retention"] == online["prometheus"]["prometheusSpec"]["retention"] == "2d"
    assert offline["grafana"]["admin"] == online["grafana"]["admin"]
    assert offline["prometheus-node-exporter"]["hostRootFsMount"] == {"enabled": False}
    assert offline["kube-state-metrics"]["resources"] == online["kube-state-metrics"]["resources"]
    assert set(monitoring.offline_images(Lab(offline=True))) == set(monitoring.OFFLINE_IMAGES)
    said = monitoring.install_steps(Lab(offline=True))[0].check(None).detail
    assert said.startswith("Grafana off: ") and "kube-state-metrics" not in said and "webhooks" not in said


def test_offline_without_the_monitoring_sources_turns_off_what_they_build_and_says_which_archive():
    from playbooks.core.helm import load_values

    offline = load_values(monitoring.release(Lab(offline=True)))
    assert offline["grafana"]["enabled"] is False and offline["kubeStateMetrics"]["enabled"] is False
    hooks = offline["prometheusOperator"]["admissionWebhooks"]
    assert hooks["enabled"] is False and hooks["patch"]["enabled"] is False
    assert offline["prometheusOperator"]["tls"]["enabled"] is False  # its certificate was the hook Job's work
    assert monitoring.offline_images(Lab(offline=True)) == list(monitoring.PART.images)
    said = monitoring.install_steps(Lab(offline=True))[0].check(None).detail
    assert "kube-state-metrics off: kube-state-metrics v2.17.0 (Apache-2.0) comes from " \
           "kube-state-metrics-2.17.0.tar.gz, and kindlab.sources.monitoring names no folder" in said
    assert "the admission webhooks, their certificate Job and the operator's TLS off: " \
           "kube-webhook-certgen v1.6.5 (Apache-2.0) comes from kube-webhook-certgen-1.6.5.tar.gz" in said


def test_offline_install_names_each_part_turned_off_and_why_and_loads_the_images_first():
    steps = monitoring.install_steps(Lab(offline=True))
    names = [s.name for s in steps]
    assert names[:2] == ["monitoring offline values", "monitoring image(s) in the kind nodes"]
    assert names[-1] == "monitoring Prometheus serving"  # not Grafana: it is off
    said = steps[0].check(None).detail
    assert "Grafana off" in said and "AGPL" in said
    assert "github.com/grafana/grafana" in said
    secret = next(s for s in steps if s.name == "monitoring grafana admin secret").check(None)
    assert secret.state == "skipped" and "Grafana is off offline" in secret.detail
    online = [s.name for s in monitoring.install_steps(Lab())]
    assert "monitoring offline values" not in online and online[-1] == "monitoring Prometheus and Grafana serving"


def test_offline_verify_skips_grafana_with_the_reason_and_dashboards_forward_prometheus_alone():
    lab = Lab(provider="kind", offline=True)
    grafana = monitoring.verify_steps(lab)[2].check(StepContext(lab, None))
    assert grafana.state == "skipped" and "Grafana is off offline" in grafana.detail
    p = free_port()
    shell = FakeShell({p: [FakeProc()]})
    printed, out, stop = until_forwarding()
    monitoring.dashboards(lab, shell=shell, kube=FakeKube(FakeCore()), out=out, stop=stop, prometheus_port=p)
    assert [argv[-2] for argv, _ in shell.spawned] == ["svc/kps-prometheus"]
    assert printed[0].startswith("no Grafana to forward: Grafana is off offline")
    assert [row[0] for row in monitoring.PART.addresses(lab)] == ["Prometheus"]
    assert [row[0] for row in monitoring.PART.addresses(Lab())] == ["Grafana", "Prometheus"]


# --- which target problems are real --------------------------------------------------
from datetime import datetime, timedelta, timezone  # noqa: E402

BEGAN = datetime(2026, 11, 26, 12, 0, 0, tzinfo=timezone.utc)


def target(pool, health, scraped=None, error=""):
    stamp = (scraped or datetime(1, 1, 1, tzinfo=timezone.utc)).isoformat().replace("+00:00", "Z")
    return {"scrapePool": pool, "health": health, "lastScrape": stamp, "lastError": error,
            "scrapeUrl": f"http://{pool}:9100/metrics", "labels": {"job": pool.split("/")[2]}}


def answer(*targets):
    return {"status": "success", "data": {"activeTargets": list(targets)}}


def pools(*names):
    return {"status": "success", "data": {"scrapePools": list(names)}}


NODE_EXPORTER = "serviceMonitor/monitoring/monitoring-prometheus-node-exporter/0"
PROMETHEUS = "serviceMonitor/monitoring/kps-prometheus/0"


def test_a_target_down_in_a_scrape_since_the_check_began_is_named_at_once():
    judge = monitoring.TargetJudge(now=BEGAN)
    found = judge.judge(answer(target(PROMETHEUS, "up", BEGAN),
                               target(NODE_EXPORTER, "down", BEGAN + timedelta(seconds=3), "connection refused")),
                        pools(PROMETHEUS, NODE_EXPORTER))
    assert len(found.failures) == 1 and not found.waiting
    assert "monitoring-prometheus-node-exporter" in found.failures[0] and "connection refused" in found.failures[0]


def test_a_target_down_only_before_the_check_or_not_scraped_yet_is_waited_for():
    judge = monitoring.TargetJudge(now=BEGAN)
    found = judge.judge(answer(target(PROMETHEUS, "unknown"),
                               target(NODE_EXPORTER, "down", BEGAN - timedelta(seconds=20), "connection refused")),
                        pools(PROMETHEUS, NODE_EXPORTER))
    assert found.failures == [] and len(found.waiting) == 2


def test_a_scrape_pool_left_without_targets_is_named_after_a_short_grace():
    clock = [100.0]
    judge = monitoring.TargetJudge(clock=lambda: clock[0], now=BEGAN)
    gone = answer(target(PROMETHEUS, "up", BEGAN))
    first = judge.judge(gone, pools(PROMETHEUS, NODE_EXPORTER))
    assert first.failures == [] and "monitoring-prometheus-node-exporter/0 has no target" in first.waiting[0]
    clock[0] += monitoring.EMPTY_POOL_GRACE_S
    later = judge.judge(gone, pools(PROMETHEUS, NODE_EXPORTER))
    assert len(later.failures) == 1 and "monitoring-prometheus-node-exporter/0 has no target" in later.failures[0]
    back = monitoring.TargetJudge(clock=lambda: clock[0], now=BEGAN)
    healthy = back.judge(answer(target(PROMETHEUS, "up", BEGAN), target(NODE_EXPORTER, "up", BEGAN)),
                         pools(PROMETHEUS, NODE_EXPORTER))
    assert healthy.failures == healthy.waiting == [] and healthy.healthy.startswith("all 2 active")


def test_poll_targets_fails_on_the_first_real_problem_and_waits_out_the_others():
    reads = iter([monitoring.Targets([], ["not scraped yet"]), monitoring.Targets(["node-exporter down"], [])])
    slept = []
    with pytest.raises(StepFailed, match="Prometheus targets: 1 down: node-exporter down"):
        monitoring.poll_targets(lambda: next(reads), 120, lambda m: None, sleep=slept.append)
    assert slept == [2.0]
    healthy = iter([monitoring.Targets([], ["x"]), monitoring.Targets([], [], "all 3 active Prometheus targets up")])
    assert monitoring.poll_targets(lambda: next(healthy), 120, lambda m: None, sleep=lambda s: None) \
        == "all 3 active Prometheus targets up"


KSM = "serviceMonitor/monitoring/monitoring-kube-state-metrics/0"


def test_kube_state_metrics_without_a_target_is_waited_for_and_named_then_its_target_up_passes():
    judge = monitoring.TargetJudge(now=BEGAN, expected=("kube-state-metrics",))
    found = judge.judge(answer(target(PROMETHEUS, "up", BEGAN)), pools(PROMETHEUS))
    assert found.failures == [] and len(found.waiting) == 1
    assert found.waiting[0].startswith("no target of job kube-state-metrics yet")
    ksm = {**target(KSM, "up", BEGAN), "labels": {"job": "kube-state-metrics"}}  # the ServiceMonitor's jobLabel
    found = judge.judge(answer(target(PROMETHEUS, "up", BEGAN), ksm, target(PROMETHEUS, "up", BEGAN),
                               target(NODE_EXPORTER, "up", BEGAN)), pools(PROMETHEUS, KSM, NODE_EXPORTER))
    assert found.waiting == found.failures == []
    # what verify says names the jobs it found up
    assert found.healthy == ("all 4 active Prometheus targets up, in 3 scrape pools: kps-prometheus (2), "
                             "kube-state-metrics, monitoring-prometheus-node-exporter")


def test_verify_expects_kube_state_metrics_where_the_release_runs_it(archives_at_hand):
    assert monitoring.expected_jobs(monitoring.release(Lab(offline=True))) == ("kube-state-metrics",)
    assert monitoring.expected_jobs(monitoring.release(Lab())) == ("kube-state-metrics",)


def test_verify_does_not_expect_kube_state_metrics_where_it_is_off():
    assert monitoring.expected_jobs(monitoring.release(Lab(offline=True))) == ()


def test_dashboards_print_the_labs_graphs_as_prometheus_query_links():
    from urllib.parse import parse_qs, urlsplit

    lab = Lab(provider="kind", offline=True)
    p = free_port()
    printed, out, stop = until_forwarding()
    monitoring.dashboards(lab, shell=FakeShell({p: [FakeProc()]}), kube=FakeKube(FakeCore()), out=out, stop=stop,
                          prometheus_port=p)
    links = [line.split()[-1] for line in printed if line.startswith("  ") and "/query?" in line]
    titles = [line.rsplit(None, 1)[0].strip() for line in printed if line.startswith("  ") and "/query?" in line]
    assert titles == ["node CPU busy (cores)", "node memory used", "pod restarts", "nginx's pods Ready",
                      "Ray's pods by phase", "all of them, one page"]
    exprs = []
    for link in links[:-1]:
        url = urlsplit(link)
        assert f"{url.scheme}://{url.netloc}{url.path}" == f"http://127.0.0.1:{p}/query"
        query = parse_qs(url.query)
        assert query["g0.tab"] == ["graph"] and query["g0.range_input"] == ["1h"] and "g1.expr" not in query
        exprs.append(query["g0.expr"][0])
    # the last one shows every graph, a panel each, in the same order
    together = parse_qs(urlsplit(links[-1]).query)
    assert [together[f"g{i}.expr"][0] for i in range(len(exprs))] == exprs and f"g{len(exprs)}.expr" not in together
    assert all(together[f"g{i}.tab"] == ["graph"] for i in range(len(exprs)))
    assert "node_cpu_seconds_total" in exprs[0] and "node_memory_MemAvailable_bytes" in exprs[1]
    assert "kube_pod_container_status_restarts_total" in exprs[2]
    assert 'namespace="default", pod=~"nginx-.*"' in exprs[3] and 'namespace=~"kuberay|ray"' in exprs[4]
    assert printed.index(f"Prometheus  http://127.0.0.1:{p}") < printed.index("forwarding until Ctrl-C")

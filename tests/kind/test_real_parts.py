"""Ray and Prometheus for real, on a real kind cluster from kindlab's offline images.

What runs for real here: the kind node, the KubeRay operator (v1.6.2, built from
its Go module), Ray 2.52.0 (PyPI, on Debian's Python) as a RayCluster sized to
this machine, a crawl submitted through the Ray Jobs API to a site nginx serves
inside the cluster, prometheus-operator, Prometheus with its web UI (npm),
Alertmanager and node-exporter (Go modules), kube-state-metrics and the admission
webhooks' certificate Jobs (kube-webhook-certgen; both from their source archives,
kindlab.sources.monitoring pointed at the project's shared sources),
`monitoring.verify` against the real Prometheus API, the port-forwards of
`invoke monitoring.dashboards`, and headless Chromium drawing a graph of the lab
from them. What stays a stand-in:
the charts (tests/fixtures/charts/*-stub: the upstream charts are not in the
repository; they render the same kinds of objects from the same value keys,
and the operators make the pods from them as they do for users).

The tests run in file order on one cluster of their own, `kindlab-parts-<checkout>`,
with Ray's tests first and monitoring's after (this machine has two cores).
Each prints the figures the issues ask for; none asserts a duration.
"""
import contextlib
import html.parser
import io
import os
import posixpath
import re
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import pytest
import yaml

from playbooks import browser, cluster, images, monitoring, providers, ray
from playbooks.core.cli import make_context
from playbooks.core.kube import condition_ready as ready
from playbooks.core.quantities import quantity
from playbooks.core.resources import absent, applied
from playbooks.core.runner import PlayFailed

from ..conftest import PlayRun
from .conftest import CHECKOUT, SOURCES_ENV, group, kind_containers

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "tests" / "fixtures" / "charts"
CLUSTER = f"kindlab-parts-{CHECKOUT}"
CHARTS = (("kuberay-operator", str(STUBS / "kuberay-operator-stub")), ("monitoring", str(STUBS / "kps-stub")),
          ("ray-cluster", str(STUBS / "ray-cluster-stub")))
SITE_NAMESPACE = "crawl-site"
SITE_URL = f"http://site.{SITE_NAMESPACE}.svc.cluster.local/"
NODE_EXPORTER = "monitoring-prometheus-node-exporter"


@pytest.fixture(scope="module")
def lab(real_lab):
    lab = replace(real_lab, cluster=CLUSTER, charts=CHARTS)
    run = PlayRun(lab)
    run(cluster.delete_steps(lab))  # a leftover of an interrupted session
    try:
        run(cluster.create_steps(lab))
    except PlayFailed:
        pytest.fail(f"the kind cluster did not come up:\n{run.output}")
    yield lab
    run(cluster.delete_steps(lab))
    assert kind_containers(make_context(lab).sh, CLUSTER) == []


@pytest.fixture
def play(lab):
    return PlayRun(lab)


@pytest.fixture
def kube(lab):
    return make_context(lab).kube


def outcomes_of(outcomes):
    return {o.step: o for o in outcomes}


def lab_changes(outcomes):
    return [o.step for o in outcomes if o.status == "changed" and not o.action]


def timed(play, steps):
    start = time.monotonic()
    outcomes = play(steps)
    return outcomes, time.monotonic() - start


def figure(text: str) -> None:
    """A measured figure for the log (pytest -s, or CI's captured output of a failure)."""
    print(f"\nFIGURE {text}")


# --- Ray ---------------------------------------------------------------------------
def test_ray_install_fits_this_machine_first_time_and_a_rerun_changes_nothing(play, lab, kube):
    first, took = timed(play, ray.install_steps(lab))
    result = outcomes_of(first)
    figure(f"ray.install first run: {took:.1f} s, changed={len(lab_changes(first))}")
    assert result["ray head and worker pods Ready"].status == "ok", play.output
    assert result["ray image(s) in the kind nodes"].status == "changed"
    gates = result["kuberay-operator values for its image"].detail
    assert "RayClusterMTLS, RayClusterNetworkPolicy, RayClusterHistoryServer left out" in gates
    # the real operator, kindlab's image, without the gates it would exit on
    (operator,) = kube.core.list_namespaced_pod("kuberay").items
    container = operator.spec.containers[0]
    assert container.image == images.reference("kuberay-operator") and ready(operator)
    assert "RayClusterMTLS" not in " ".join(container.args) and (operator.status.container_statuses[0]
                                                                 .restart_count == 0)
    # head and worker made by the operator, on kindlab's Ray, within what the node has
    pods = kube.core.list_namespaced_pod("ray").items
    assert {p.metadata.labels.get("ray.io/node-type") for p in pods} == {"head", "worker", None}  # and the site
    assert all(map(ready, pods))
    ray_pods = [p for p in pods if "ray.io/node-type" in p.metadata.labels]
    assert {p.spec.containers[0].image for p in ray_pods} == {images.reference("ray")}
    sizing = result["ray pods sized to the cluster"].detail
    cpu_m = int(re.search(r"head and worker (\d+)m CPU", sizing).group(1))
    assert {p.spec.containers[0].resources.requests["cpu"] for p in ray_pods} == {f"{cpu_m}m"}
    # requested, not limited: the processes a crawl job starts are not throttled (memory stays limited)
    assert all("cpu" not in (p.spec.containers[0].resources.limits or {}) for p in ray_pods)
    assert all("memory" in p.spec.containers[0].resources.limits for p in ray_pods)
    figure(f"ray sizing: {sizing}")
    # offline, the crawl's site beside the RayCluster, on kindlab's image, Ready
    assert result["python-docs site (the crawl's)"].status == "changed", play.output
    (site,) = [p for p in pods if p.metadata.labels.get("app") == "python-docs"]
    assert site.spec.containers[0].image == images.reference("python-docs") and ready(site)

    again, took = timed(play, ray.install_steps(lab))
    figure(f"ray.install rerun: {took:.1f} s, changed={len(lab_changes(again))}")
    assert lab_changes(again) == [] and {o.status for o in again} == {"ok"}, play.output


def site_pages() -> dict[str, str]:
    """21 pages (home, 4 sections, 16 pages under them) and one link to a page that does not exist."""
    def page(title: str, links: list[str]) -> str:
        items = "".join(f'<li><a href="{link}">{link}</a></li>' for link in links)
        return f"<!doctype html><html><head><title>{title}</title></head><body><ul>{items}</ul></body></html>"

    pages = {"index.html": page("home", [f"s{s}.html" for s in range(4)])}
    for s in range(4):
        pages[f"s{s}.html"] = page(f"section {s}", [f"s{s}p{p}.html" for p in range(4)] + ["/"])
        for p in range(4):
            links = ["/", f"s{s}.html", f"s{s}p{(p + 1) % 4}.html"] + (["missing.html"] if (s, p) == (3, 3) else [])
            pages[f"s{s}p{p}.html"] = page(f"page {s}.{p}", links)
    return pages


def site_documents(lab) -> list[dict]:
    labels = {"app": "site"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SITE_NAMESPACE}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "site", "namespace": SITE_NAMESPACE},
         "data": site_pages()},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "site", "namespace": SITE_NAMESPACE},
         "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
             "containers": [{"name": "nginx", "image": images.reference("nginx"),
                             "volumeMounts": [{"name": "site", "mountPath": "/var/www/html"}]}],
             "volumes": [{"name": "site", "configMap": {"name": "site"}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "site", "namespace": SITE_NAMESPACE},
         "spec": {"selector": labels, "ports": [{"port": 80}]}},
    ]


def test_a_crawl_of_a_site_served_in_the_cluster_reports_exactly_its_pages_and_broken_link(play, lab):
    site = [*providers.of(lab).images_steps("site", [images.reference("nginx")]),
            applied("crawl site namespace", lab, lambda: site_documents(lab)[:1]),
            applied("crawl site", lab, lambda: site_documents(lab)[1:],
                    wait=lambda ctx: ctx.kube.wait_deployment(SITE_NAMESPACE, "site", timeout=120, say=ctx.say))]
    play(site)
    shown = []
    args = ray.crawl_args([SITE_URL], "", depth=5, max_pages=200, concurrency=8)
    outcomes, took = timed(play, ray.crawl_steps(replace(lab, verbose=True), args,
                                                 show=lambda text: shown.append(str(text))))
    crawl = outcomes_of(outcomes)["crawler job on Ray"]
    figure(f"ray.crawl of the in-cluster site: {took:.1f} s; {crawl.detail}")
    assert crawl.status == "changed" and crawl.action, play.output
    assert re.search(r"job finished in [\d.]+s: 21 pages, 1 failed$", crawl.detail), crawl.detail
    summary = "\n".join(shown)
    assert "Total: 21 unique pages" in summary
    assert f"broken: {SITE_URL}missing.html (HTTP 404) on {SITE_URL}s3p3.html" in summary
    assert re.search(r"submitted Ray job raysubmit_\w+", summary)  # the job's identity, from the Jobs API
    # kindlab's Ray image has this crawler: nothing travelled with the job; --verbose said where the time went
    assert "where the crawl job's seconds went (the crawler from the Ray image)" in summary
    figure("breakdown:\n" + summary[summary.index("where the crawl job's seconds went"):])


# --- the offline default: Python's documentation, served by the ray part -----------------------
class Anchors(html.parser.HTMLParser):
    """<a href> and <area href>, read by the standard library's parser: the crawler's own scanner is what
    is under test, so the site's link graph comes from another reading of the same files."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        href = dict(attrs).get("href")
        if tag in ("a", "area") and href is not None:
            self.hrefs.append(href.strip())


def docs_files(sh) -> dict[str, bytes]:
    """The HTML files nginx serves in kindlab's python-docs image, by path under the site's root."""
    out = subprocess.run(["docker", "run", "--rm", "--entrypoint", "tar", images.reference("python-docs"), "-C",
                          "/usr/share/doc/python3.11/html", "-cf", "-", "."], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as archive:
        return {m.name[2:]: archive.extractfile(m).read() for m in archive if m.isfile() and m.name.endswith(".html")}


def docs_graph(files: dict[str, bytes], depth: int):
    """Breadth first from the site's root, as nginx answers (a folder serves its index.html): the pages
    within `depth` by path, the links that answer 404 (their paths), and who links to whom."""
    depth_of, queue, pages, missing, linked_from = {"/": 0}, deque(["/"]), {}, set(), {}
    while queue:
        path = queue.popleft()
        body = files.get((path + "index.html" if path.endswith("/") else path).lstrip("/"))
        if body is None:
            missing.add(path)
            continue
        pages[path] = depth_of[path]
        if depth_of[path] == depth:
            continue
        anchors = Anchors()
        anchors.feed(body.decode("utf-8", "replace"))
        for href in anchors.hrefs:
            target = urllib.parse.urlsplit(urllib.parse.urljoin("http://site" + path, href))
            if target.scheme != "http" or target.netloc != "site":
                continue
            link = posixpath.normpath(target.path) + ("/" if target.path.endswith("/") and target.path != "/" else "")
            linked_from.setdefault(link, set()).add(path)
            if link not in depth_of:
                depth_of[link] = depth_of[path] + 1
                queue.append(link)
    return pages, missing, linked_from


def site_log(kube) -> list[str]:
    """The crawler's requests in the python-docs pod's access log (its readiness probe left out)."""
    (pod,) = kube.core.list_namespaced_pod("ray", label_selector="app=python-docs").items
    log = kube.core.read_namespaced_pod_log(pod.metadata.name, "ray")
    return [line for line in log.splitlines() if "kindlab-crawler" in line]


def test_the_offline_default_crawl_reads_pythons_docs_whole_and_names_the_link_debian_broke(play, lab, kube):
    """`invoke all` and `ray.crawl` offline crawl Python's documentation (Debian's python3.11-doc) in the
    cluster. Debian ships whatsnew/changelog.html compressed, so the links to it answer 404: a broken link
    the real site has, reported with a page it is on."""
    target = ray.default_crawl(lab)
    origin = target.urls[0].rstrip("/")
    pages, missing, linked_from = docs_graph(docs_files(make_context(lab).sh), target.depth)
    assert len(pages) > 500 and missing == {"/whatsnew/changelog.html"}  # the site, read independently
    before = len(site_log(kube))
    shown = []
    outcomes, took = timed(play, ray.crawl_steps(replace(lab, verbose=True), ray.target_args(target),
                                                 show=lambda text: shown.append(str(text))))
    crawl = outcomes_of(outcomes)["crawler job on Ray"]
    summary = "\n".join(shown)
    assert crawl.status == "changed", play.output
    # every page the site links to within the depth, and nothing else
    total = re.search(r"Total: (\d+) unique pages, (\d+) URLs fetched, (\d+) failed, in [\d.]+s \(([\d.]+) pages/s\)",
                      summary)
    assert total and (int(total.group(1)), int(total.group(3))) == (len(pages), 1), summary
    assert f"job finished in" in crawl.detail and f"{len(pages)} pages, 1 failed" in crawl.detail
    broken = re.search(rf"broken: {re.escape(origin)}/whatsnew/changelog.html \(HTTP 404\) on {re.escape(origin)}(\S+)",
                       summary)
    assert broken and broken.group(1) in linked_from["/whatsnew/changelog.html"], summary  # a page it is on
    # the server's side: each URL requested once (robots.txt included), none outside the crawl
    requests = [re.search(r'"GET (\S+) HTTP', line).group(1) for line in site_log(kube)[before:]]
    assert len(requests) == len(set(requests)) == len(pages) + 1 + 1  # the pages, the broken link, robots.txt
    assert set(requests) == set(pages) | missing | {"/robots.txt"}
    figure(f"ray.crawl of Python's docs: {took:.1f} s, {total.group(1)} pages, {total.group(4)} pages/s; "
           f"{crawl.detail}\n" + summary[summary.index("where the crawl job's seconds went"):])

    # the smallest crawl: one page, the fixed costs alone
    shown.clear()
    outcomes, took = timed(play, ray.crawl_steps(replace(lab, verbose=True),
                                                 ray.crawl_args([target.urls[0]], "", 0, 10, 8),
                                                 show=lambda text: shown.append(str(text))))
    assert "Total: 1 unique pages" in "\n".join(shown)
    figure(f"ray.crawl of one page (the step, without invoke's own start): {took:.1f} s\n"
           + "\n".join(shown)[("\n".join(shown)).index("where the crawl job's seconds went"):])


def test_an_oversized_ray_cluster_fails_in_seconds_naming_requested_and_free(play, lab, kube):
    play(ray.uninstall_steps(lab))
    node = kube.core.list_node().items[0]
    allocatable = quantity(node.status.allocatable["cpu"], "m")
    used = sum(quantity(((c.resources.requests or {}) if c.resources else {}).get("cpu", "0"), "m")
               for p in kube.core.list_pod_for_all_namespaces(field_selector="status.phase=Running").items
               for c in p.spec.containers)
    # room for the operator (100m) and not much else: Ray needs two pods of 250m at least
    hog_m = allocatable - used - 400
    hog = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hog", "namespace": "default"},
           "spec": {"selector": {"matchLabels": {"app": "hog"}}, "template": {"metadata": {"labels": {"app": "hog"}},
                    "spec": {"containers": [{"name": "hog", "image": images.reference("nginx"),
                                             "resources": {"requests": {"cpu": f"{hog_m}m"}}}]}}}}
    hogging = applied("hog", lab, lambda: [hog], wait=lambda ctx: ctx.kube.wait_deployment(
        "default", "hog", timeout=60, say=ctx.say))
    play([hogging])
    try:
        start = time.monotonic()
        with pytest.raises(PlayFailed):
            play(ray.install_steps(lab))
        took = time.monotonic() - start
        out = play.output
        figure(f"oversized ray.install failed after {took:.1f} s")
        failed = re.search(r"failed\s+ray pods sized to the cluster.*?\n(.*?)\n(?:skipped|PLAY)", out, re.S)
        assert failed, out
        message = " ".join(failed.group(1).split())
        figure(f"oversized message: {message}")
        assert re.search(r"does not fit: head and worker would get only \d+m CPU / \d+Mi each \(free for Ray: -?\d+m CPU", message)
        assert "Ray needs at least 250m CPU / 768Mi for each of its two pods" in message
        assert "free resources" in message  # what to do next
        assert re.search(r"skipped\s+ray image\(s\) in the kind nodes", out)  # nothing heavy was started
        assert "not ready after" not in out  # decided, not waited out
    finally:
        PlayRun(lab)([absent("hog absent", lab, lambda: [hog])])


def test_ray_uninstall_removes_operator_and_cluster_and_a_rerun_is_ok(play, lab, kube):
    outcomes = play(ray.uninstall_steps(lab))
    assert "failed" not in {o.status for o in outcomes}, play.output
    names = {ns.metadata.name for ns in kube.core.list_namespace().items}
    assert not names & {"ray", "kuberay"}
    assert {o.status for o in play(ray.uninstall_steps(lab))} == {"ok"}, play.output
    play([absent("crawl site absent", lab, lambda: site_documents(lab)[:1])])


# --- monitoring ------------------------------------------------------------------------
def test_monitoring_install_runs_the_real_operator_offline_and_a_rerun_changes_nothing(play, lab, kube):
    first, took = timed(play, monitoring.install_steps(lab))
    result = outcomes_of(first)
    figure(f"monitoring.install first run: {took:.1f} s, changed={len(lab_changes(first))}")
    assert result["monitoring Prometheus serving"].status == "ok", play.output
    said = result["monitoring offline values"].detail
    assert said.startswith("Grafana off: ") and "kube-state-metrics" not in said and "certificate Job" not in said
    assert result["monitoring grafana admin secret"].status == "skipped"
    # the real operator, in the cluster, made Prometheus and Alertmanager from the release's resources
    operator = kube.apps.read_namespaced_deployment("kps-operator", "monitoring")
    assert operator.spec.template.spec.containers[0].image == images.reference("prometheus-operator")
    statefulset = kube.apps.read_namespaced_stateful_set("prometheus-kps-prometheus", "monitoring")
    assert [ref.kind for ref in statefulset.metadata.owner_references] == ["Prometheus"]
    # everything on kindlab's images, kube-state-metrics too; the certificate Jobs ran and are gone
    running = {c.image for p in kube.core.list_namespaced_pod("monitoring").items
               if p.status.phase != "Succeeded" and not p.metadata.deletion_timestamp for c in p.spec.containers}
    assert running == {images.reference(n) for n in monitoring.OFFLINE_IMAGES if n != "kube-webhook-certgen"}
    ksm = kube.apps.read_namespaced_deployment("monitoring-kube-state-metrics", "monitoring")
    assert ksm.status.ready_replicas == 1
    assert not [d for d in kube.apps.list_namespaced_deployment("monitoring").items if "grafana" in d.metadata.name]
    assert not kube.batch.list_namespaced_job("monitoring").items  # helm deletes each hook Job once it succeeded

    again, took = timed(play, monitoring.install_steps(lab))
    figure(f"monitoring.install rerun: {took:.1f} s, changed={len(lab_changes(again))}")
    assert lab_changes(again) == [] and "failed" not in {o.status for o in again}, play.output


def test_the_webhooks_certificate_jobs_ran_and_the_operator_checks_prometheus_rules_with_it(lab, kube):
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    # both certificate Jobs ran to completion (helm then deleted them: their events stay a while)
    completed = {e.involved_object.name for e in kube.core.list_namespaced_event("monitoring").items
                 if e.involved_object.kind == "Job" and e.reason == "Completed"}
    assert {"kps-admission-create", "kps-admission-patch"} <= completed, completed
    # the create Job made the certificate; the patch Job gave its CA to both webhook configurations
    secret = kube.core.read_namespaced_secret("kps-admission", "monitoring")
    assert {"ca", "cert", "key"} <= set(secret.data)
    admission = client.AdmissionregistrationV1Api(kube.api)
    for configuration in (admission.read_mutating_webhook_configuration("kps-admission"),
                          admission.read_validating_webhook_configuration("kps-admission")):
        assert [w.client_config.ca_bundle for w in configuration.webhooks] == [secret.data["ca"]]
    args = kube.apps.read_namespaced_deployment("kps-operator", "monitoring").spec.template.spec.containers[0].args
    assert "--web.enable-tls=true" in args  # the operator serves with that certificate
    # so the API server reaches the operator's webhook over TLS, and a broken rule is refused (the webhooks'
    # failurePolicy is Ignore: without the certificate and its CA the rule would pass)
    def rule(name, expr):
        return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                "metadata": {"name": name, "namespace": "monitoring"},
                "spec": {"groups": [{"name": "kindlab", "rules": [{"alert": "Broken", "expr": expr}]}]}}

    with pytest.raises(ApiException) as refused:
        kube.custom.create_namespaced_custom_object("monitoring.coreos.com", "v1", "monitoring", "prometheusrules",
                                                    rule("kindlab-broken", "sum(up"))
    figure(f"a broken PrometheusRule: HTTP {refused.value.status}: {refused.value.body[:300]}")
    assert "denied the request" in refused.value.body and "prometheusrulevalidate" in refused.value.body
    kube.custom.create_namespaced_custom_object("monitoring.coreos.com", "v1", "monitoring", "prometheusrules",
                                                rule("kindlab-fine", "up == 0"))
    kube.custom.delete_namespaced_custom_object("monitoring.coreos.com", "v1", "monitoring", "prometheusrules",
                                                "kindlab-fine")


def test_verify_asks_the_real_prometheus_and_finds_every_target_up(play, lab):
    outcomes, took = timed(play, monitoring.verify_steps(lab))
    result = outcomes_of(outcomes)
    figure(f"monitoring.verify: {took:.1f} s; {result['prometheus targets up'].detail}")
    assert result["prometheus targets up"].status == "changed", play.output
    detail = result["prometheus targets up"].detail
    count = int(re.search(r"all (\d+) active Prometheus targets up", detail).group(1))
    # Prometheus and its reloader, Alertmanager and its reloader, the operator, node-exporter, kube-state-metrics
    assert count >= 7
    assert re.search(r"[:,] kube-state-metrics(,|$)", detail), detail
    assert result["grafana healthy"].status == "skipped" and "Grafana is off offline" in result["grafana healthy"].detail


def test_a_target_taken_down_is_named_without_waiting_out_the_timeout(play, lab, kube):
    def node_exporters():
        return kube.core.list_namespaced_pod("monitoring", label_selector="app.kubernetes.io/name="
                                             "prometheus-node-exporter").items

    # node-exporter "scaled to 0": a DaemonSet scheduled on no node
    nowhere = {"spec": {"template": {"spec": {"nodeSelector": {"kindlab.dev/nowhere": "true"}}}}}
    kube.apps.patch_namespaced_daemon_set(NODE_EXPORTER, "monitoring", nowhere)
    try:
        deadline = time.monotonic() + 60
        while node_exporters():
            assert time.monotonic() < deadline, "node-exporter's pod was not removed"
            time.sleep(0.5)
        gone = time.monotonic()
        # verify reports what Prometheus sees, which follows the cluster by its service discovery's
        # refresh (5 s): a verify in that moment still finds the target up, the next one names it.
        passes = 0
        while True:
            try:
                play(monitoring.verify_steps(lab))
            except PlayFailed:
                break
            passes += 1
            assert time.monotonic() - gone < 60, f"the target down was never named:\n{play.output}"
        figure(f"target down named {time.monotonic() - gone:.1f} s after node-exporter's pod was gone "
               f"(scrape interval 30 s; {passes} verify run(s) before it still saw the target up)")
        failed = re.search(r"failed\s+prometheus targets up.*?\n(.*?)\n(?:skipped|PLAY)", play.output, re.S)
        message = " ".join(failed.group(1).split())
        assert f"serviceMonitor/monitoring/{NODE_EXPORTER}/0 has no target" in message, play.output
        assert "after 180s" not in message  # named as down, not waited out
    finally:
        kube.apps.patch_namespaced_daemon_set(NODE_EXPORTER, "monitoring", [
            {"op": "remove", "path": "/spec/template/spec/nodeSelector/kindlab.dev~1nowhere"}])
    back = outcomes_of(play(monitoring.verify_steps(lab)))
    assert back["prometheus targets up"].status == "changed", play.output


def prometheus_answers(url: str = "http://127.0.0.1:9090/api/v1/query?query=up") -> list:
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = yaml.safe_load(response.read())
    assert answer["status"] == "success"
    return answer["data"]["result"]


def until(check, seconds: float, what: str):
    """check() once it stops raising, within `seconds` (a bound on a wait, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return check()
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} after {seconds:.0f}s: {exc}") from exc
            time.sleep(0.3)


def printed(output: Path, text: str, proc) -> None:
    """Raises until the task has printed `text`; fails at once if it exited."""
    if text in output.read_text():
        return
    if proc.poll() is not None:
        pytest.fail(f"invoke monitoring.dashboards exited with {proc.returncode}:\n{output.read_text()}")
    raise AssertionError(f"not printed yet: {text!r}")


@contextlib.contextmanager
def dashboards_running(lab, tmp_path):
    """`invoke monitoring.dashboards` as a user runs it (its own process group), until it forwards."""
    config = tmp_path / "kindlab.yaml"
    config.write_text(yaml.safe_dump({"kindlab": {
        "home": str(lab.home), "kubeconfig": str(lab.kubeconfig), "provider": "kind", "cluster": lab.cluster,
        "offline": True, "charts": dict(CHARTS)}}))
    output = tmp_path / "dashboards.log"
    with open(output, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "invoke", "-f", str(config), "monitoring.dashboards"], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                env={**os.environ, **SOURCES_ENV},
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        until(lambda: printed(output, "forwarding until Ctrl-C", proc), 60, "dashboards never started")
        yield proc, output
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def fetched(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200, url
        return response.headers.get("Content-Type", ""), response.read()


def series(expr: str, empty_ok: bool = False) -> list:
    """What Prometheus answers for `expr` through the forward (raises while it has no series, unless empty_ok)."""
    found = prometheus_answers("http://127.0.0.1:9090/api/v1/query?" + urlencode({"query": expr}))
    assert found or empty_ok, f"no series yet for {expr}"
    return found


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # the IHDR chunk's width and height


@pytest.mark.skipif(sys.platform == "win32", reason="process groups and SIGINT")
def test_the_prometheus_ui_is_served_through_the_dashboards_forward_and_draws_a_graph_of_the_lab(
        lab, tmp_path, chromium):
    with dashboards_running(lab, tmp_path) as (proc, output):
        text = output.read_text()
        printed_links = re.findall(r"^  (\S.*?)\s{2,}(http://127\.0\.0\.1:9090/query\?\S+)$", text, re.M)
        links, (everything, one_page) = printed_links[:-1], printed_links[-1]
        assert [title for title, _ in links] == [title for title, _ in monitoring.graphs()], text
        assert everything == monitoring.ALL_GRAPHS
        # the UI's page and every script and style sheet it names, as a browser loads them
        kind, page = until(lambda: fetched("http://127.0.0.1:9090/query"), 30, "no UI page at 127.0.0.1:9090/query")
        assert kind.startswith("text/html") and b'<div id="root">' in page
        assets = re.findall(rb'(?:src|href)="\./(assets/[^"]+\.(?:js|css))"', page)
        assert {a.rsplit(b".", 1)[1] for a in assets} == {b"js", b"css"}, page[:2000]
        sizes = []
        for asset in assets:
            kind, body = fetched(f"http://127.0.0.1:9090/{asset.decode()}")
            assert kind.split(";")[0] in ("text/javascript", "application/javascript", "text/css"), (asset, kind)
            sizes.append(f"{asset.decode()} {len(body) / 1e6:.2f} MB")
            assert len(body) > 10_000, asset
        figure(f"Prometheus UI through the forward: /query and {'; '.join(sizes)}")
        # each graph's expression is one the Prometheus API evaluates; node-exporter's and
        # kube-state-metrics' already give series (a rate needs two scrapes: 30 s apart)
        for title, url in links:
            expr = parse_qs(urlsplit(url).query)["g0.expr"][0]
            until(lambda: series(expr, empty_ok=title not in ("node CPU busy (cores)", "node memory used",
                                                                "pod restarts")), 120, f"{title}: {expr}")
        # as a person sees it: headless Chromium runs the page's scripts, which ask the API and draw; the
        # first graph, as wide as this young lab's history (the links say 1h), and a picture of it
        title, url = links[0]
        query = [(k, "15m" if k.endswith(".range_input") else v) for k, v in parse_qsl(urlsplit(url).query)]
        png, blank = tmp_path / "prometheus-ui.png", tmp_path / "blank.png"
        started = time.monotonic()
        drawn = browser.render(f"http://127.0.0.1:9090/query?{urlencode(query)}", png)
        figure(f"chromium rendered {title} in {time.monotonic() - started:.1f} s: {png} "
               f"({png.stat().st_size / 1e3:.0f} kB)")
        assert "u-over" in drawn and "Error executing query" not in drawn, drawn[-3000:]  # a plot area, drawn
        assert re.search(r'class="u-label">\{instance="[^"]+:9100"\}<', drawn), drawn[-3000:]  # a node's series
        browser.render("about:blank", blank)
        assert png_size(png.read_bytes()) == (1400, 900)
        assert png.stat().st_size > 3 * blank.stat().st_size  # drawn: text, axes and lines, not white
        if os.environ.get("KINDLAB_UI_SCREENSHOT"):  # the README's picture: docs/prometheus-ui.png
            shutil.copyfile(png, os.environ["KINDLAB_UI_SCREENSHOT"])


@pytest.mark.skipif(sys.platform == "win32", reason="process groups and SIGINT")
def test_dashboards_serve_prometheus_bring_a_killed_forward_back_and_end_on_ctrl_c(lab, tmp_path):
    with dashboards_running(lab, tmp_path) as (proc, output):
        assert "no Grafana to forward: Grafana is off offline" in output.read_text()
        def scraped():
            jobs = {r["metric"]["job"] for r in prometheus_answers()}
            assert jobs >= {"kps-prometheus", NODE_EXPORTER}, jobs  # scraped through the forward's Prometheus
        until(scraped, 60, "Prometheus at 127.0.0.1:9090 had not scraped itself and node-exporter")
        # the forward's kubectl dies (its pod replaced, a laptop asleep): it comes back by itself
        (kubectl,) = [pid for pid, args in group(proc.pid) if "port-forward" in args]
        os.kill(kubectl, signal.SIGKILL)
        killed = time.monotonic()
        until(lambda: printed(output, "Prometheus port-forward exited", proc), 30, "the supervisor never noticed")
        until(prometheus_answers, 30, "Prometheus did not answer again at 127.0.0.1:9090")
        figure(f"dashboards: Prometheus answered again {time.monotonic() - killed:.1f} s after its kubectl was killed")
        (again,) = [pid for pid, args in group(proc.pid) if "port-forward" in args]
        assert again != kubectl
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        proc.wait(timeout=30)
        text = output.read_text()
        assert "port-forwards stopped" in text, text
        assert group(proc.pid) == []  # no kubectl left behind
        with pytest.raises(OSError):
            urllib.request.urlopen("http://127.0.0.1:9090/-/ready", timeout=2)


def test_monitoring_uninstall_removes_release_and_namespace_and_a_rerun_is_ok(play, lab, kube):
    outcomes = play(monitoring.uninstall_steps(lab))
    assert {o.step: o.status for o in outcomes} == {"monitoring release absent": "changed",
                                                    "monitoring namespace monitoring absent": "changed"}, play.output
    assert "monitoring" not in {ns.metadata.name for ns in kube.core.list_namespace().items}
    assert {o.status for o in play(monitoring.uninstall_steps(lab))} == {"ok"}, play.output

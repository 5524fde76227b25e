"""Helm releases as data: chart repository, namespace, CRDs, then the release itself.

A `Release` says what should be installed; `release_steps` turns it into steps
that decide before they act. The release step reads what is installed
(`helm list`, `helm get values`) and compares the chart and the user-supplied
values with the desired ones, so a rerun on a converged release reports `ok`
instead of upgrading for nothing. Values files and inline values are merged
here, in Python, and reach helm as one document on stdin: what kindlab
compares is exactly what helm stores, and no value (a password) ever appears
in a process argument list or a file left behind.

CRDs that are too big for client-side apply (kube-prometheus-stack's exceed
the 256 KiB `last-applied-configuration` annotation) are applied server-side
from `helm show crds` and waited Established before the release installs with
`--skip-crds`. A failed upgrade is rolled back to the last deployed revision,
and the error says so. Every helm command names the kubeconfig and context.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import tarfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from . import kyaml
from .commands import CommandError
from .resources import applied
from .settings import Lab
from .steps import Handoff, Step, StepFailed, change, is_transient, ok, unknown

DEFAULT_INDEX_MAX_AGE = 24 * 3600.0  # seconds before a repository index is refreshed
PENDING = ("pending-install", "pending-upgrade", "pending-rollback")
HELM_HOOK = "helm.sh/hook"
DIGEST_LABEL = "kindlab.dev/chart-digest"  # on helm's release Secret: the local chart's files it came from
CRDS_HASH = "kindlab.dev/chart-crds-sha256"  # on each CRD: the chart CRD text it came from
_SECRET_KEY_WORDS = ("password", "secret", "token", "apikey", "api_key", "privatekey")


@dataclass(frozen=True)
class LogRefusal:
    """A container that exits with `marker` in its log will never run here: the wait fails at once
    with `reason` instead of waiting out a crash loop (OpenFaaS CE's faas-netes without internet)."""

    container: str
    marker: str
    reason: str


@dataclass(frozen=True)
class Release:
    """One Helm release: which chart, which version, where, with what values."""

    name: str
    namespace: str
    chart: str  # "repo/chart", or a local chart directory or .tgz
    version: str | None = None
    repo_name: str | None = None
    repo_url: str | None = None
    values_files: tuple = ()
    # inline values over the files': a mapping, or a Handoff a step before the release decides
    values: Any = field(default_factory=dict, hash=False)
    crds_from_chart: bool = False
    wait: bool = True
    min_pods: int = 1  # pods the namespace must have before the wait can be satisfied
    refusals: tuple[LogRefusal, ...] = ()  # log lines of its containers that mean it can never run
    index_max_age: float = DEFAULT_INDEX_MAX_AGE

    @property
    def is_local(self) -> bool:
        return is_local_chart(self.chart)


def local_release(release: Release, chart: str | Path | None) -> Release:
    """The release from a local chart (directory or .tgz) instead of its repository; as is for None.

    For machines without access to the chart repositories (kindlab.charts in
    invoke.yaml) and for the tests' fixture charts: no repository step, and
    the version compared is the one in the local chart's Chart.yaml.
    """
    if not chart:
        return release
    return replace(release, chart=str(chart), version=None, repo_name=None, repo_url=None)


def is_local_chart(chart: str) -> bool:
    """A path on disk (directory or archive) rather than a `repo/chart` reference."""
    return (chart.startswith((".", "/", "~")) or chart.endswith((".tgz", ".tar.gz"))
            or Path(chart).expanduser().exists() or "\\" in chart or ":" in chart[1:3])


def helm(lab: Lab, *args: str) -> list[str]:
    """A helm argument list that always names the lab's kubeconfig and context (where helm runs)."""
    return ["helm", *lab.cluster_flags("--kube-context"), *args]


# --- values ---------------------------------------------------------------
def deep_merge(base: Mapping, override: Mapping) -> dict:
    """Helm's merge of values sources: maps merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def normalise(values: Any) -> Any:
    """Values as helm stores them: through JSON, whole floats as ints, nulls kept.

    Helm keeps a null (it deletes a chart default) and reads numbers as
    floats, so `1.0` comes back as `1`; a string stays a string ("80" != 80).
    """
    def canon(value):
        if isinstance(value, dict):
            return {k: canon(v) for k, v in value.items()}
        if isinstance(value, list):
            return [canon(v) for v in value]
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    if values is None:
        return {}
    return canon(json.loads(json.dumps(values, default=str)))


def load_values(release: Release) -> dict:
    """The values files (in order) deep-merged with the inline values, normalised."""
    merged: dict = {}
    for path in release.values_files:
        path = Path(path).expanduser()
        try:
            data = kyaml.load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise StepFailed(f"release {release.name}: cannot read values file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise StepFailed(f"release {release.name}: values file {path} is not valid YAML: {exc}") from None
        if data is None:
            continue
        if not isinstance(data, Mapping):
            raise StepFailed(f"release {release.name}: values file {path} must hold a mapping, "
                             f"not a {type(data).__name__}")
        merged = deep_merge(merged, data)
    inline = release.values.get() if isinstance(release.values, Handoff) else release.values
    return normalise(deep_merge(merged, inline or {}))


def values_diff(current: Any, desired: Any, prefix: str = "") -> list[str]:
    """Dotted paths where the installed values differ from the desired ones."""
    if isinstance(current, dict) and isinstance(desired, dict):
        paths = []
        for key in sorted(set(current) | set(desired), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in current or key not in desired:
                paths.append(path)
            else:
                paths.extend(values_diff(current[key], desired[key], path))
        return paths
    # JSON tells apart what Python's == does not: true vs 1, "80" vs 80.
    same = json.dumps(current, sort_keys=True) == json.dumps(desired, sort_keys=True)
    return [] if same else [prefix or "(all values)"]


def secret_strings(values: Any, under_secret_key: bool = False) -> list[str]:
    """String values under keys that look secret, to be masked in any error message."""
    found: list[str] = []
    if isinstance(values, dict):
        for key, value in values.items():
            secret = under_secret_key or any(w in str(key).lower().replace("-", "") for w in _SECRET_KEY_WORDS)
            found += secret_strings(value, secret)
    elif isinstance(values, list):
        for value in values:
            found += secret_strings(value, under_secret_key)
    elif under_secret_key and isinstance(values, str) and len(values) >= 4:
        found.append(values)
    return found


def describe_drift(current_chart: str, desired_chart: str | None, paths: Sequence[str]) -> str:
    """`chart demo-0.1.0 -> demo-0.2.0; values keys a.b, c` (at most 6 keys named)."""
    parts = []
    if desired_chart and current_chart != desired_chart:
        parts.append(f"chart {current_chart} -> {desired_chart}")
    if paths:
        shown = ", ".join(paths[:6]) + (f" and {len(paths) - 6} more" if len(paths) > 6 else "")
        parts.append(f"values keys {shown}")
    return "; ".join(parts)


# --- charts ---------------------------------------------------------------
def local_chart_meta(path: str | Path) -> dict:
    """Chart.yaml of a chart directory or packaged .tgz."""
    path = Path(path).expanduser()
    try:
        if path.is_dir():
            return kyaml.load((path / "Chart.yaml").read_text(encoding="utf-8")) or {}
        with tarfile.open(path) as archive:
            member = next(m for m in archive.getmembers()
                          if m.name.count("/") == 1 and m.name.endswith("/Chart.yaml"))
            return kyaml.load(archive.extractfile(member).read()) or {}
    except (OSError, StopIteration, tarfile.TarError, yaml.YAMLError) as exc:
        raise StepFailed(f"{path} is not a Helm chart (no readable Chart.yaml): {exc}") from None


def chart_files(path: str | Path) -> dict[str, bytes]:
    """Every file of a chart directory or .tgz by its path inside the chart; packaged
    subcharts (charts/NAME-VERSION.tgz) are opened and listed under charts/NAME/."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _with_subcharts({p.relative_to(path).as_posix(): p.read_bytes()
                                for p in sorted(path.rglob("*")) if p.is_file()})
    return _archive_files(path.read_bytes())


def _archive_files(data: bytes) -> dict[str, bytes]:
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        for member in archive.getmembers():
            if member.isfile():
                # members are CHART/..., the chart's own folder first
                files[member.name.split("/", 1)[1] if "/" in member.name else member.name] = \
                    archive.extractfile(member).read()
    return _with_subcharts(files)


def _with_subcharts(files: dict[str, bytes]) -> dict[str, bytes]:
    out = {}
    for name, data in files.items():
        parts = name.split("/")
        if len(parts) == 2 and parts[0] == "charts" and name.endswith(".tgz"):
            sub = _archive_files(data)
            prefix = "charts/" + (kyaml.load(sub.get("Chart.yaml", b"{}").decode()) or {}).get(
                "name", parts[1].removesuffix(".tgz"))
            out.update({f"{prefix}/{k}": v for k, v in sub.items()})
        else:
            out[name] = data
    return out


def crd_files(files: Mapping[str, bytes]) -> dict[str, str]:
    """The CRD files helm installs from a chart: its crds/ folder and its subcharts', at any depth."""
    def is_crd(name: str) -> bool:
        parts = name.split("/")
        while len(parts) > 2 and parts[0] == "charts":
            parts = parts[2:]
        return len(parts) > 1 and parts[0] == "crds" and name.endswith((".yaml", ".yml", ".json"))

    return {name: data.decode("utf-8") for name, data in sorted(files.items()) if is_crd(name)}


def desired_chart(release: Release) -> str | None:
    """The `name-version` helm will list once the release is converged (None: not pinned)."""
    if release.is_local:
        meta = local_chart_meta(release.chart)
        return f"{meta.get('name')}-{meta.get('version')}"
    if release.version:
        return f"{release.chart.rsplit('/', 1)[-1]}-{release.version}"
    return None


def cached_chart(lab: Lab, release: Release) -> Path:
    """Where a pinned repository chart is kept once pulled (it may not be there yet)."""
    repo, _, name = release.chart.rpartition("/")
    return lab.home / "charts" / f"{repo or 'chart'}-{name}-{release.version}.tgz"


def chart_at_hand(lab: Lab, release: Release) -> Path | None:
    """The chart on this machine, needing no network: a local chart, or a pinned one pulled before."""
    if release.is_local:
        return Path(release.chart).expanduser()
    cached = cached_chart(lab, release) if release.version else None
    return cached if cached is not None and cached.exists() else None


def chart_defaults(path: Path) -> dict:
    """A chart's own values.yaml (directory or archive), as helm reads it."""
    text = chart_files(path).get("values.yaml", b"").decode("utf-8")
    return kyaml.load(text) or {}


def chart_source(ctx, lab: Lab, release: Release) -> list[str]:
    """The chart argument for helm: a local path, the cached archive of a pinned repo chart, or repo/chart
    (a path of this machine; `chart_there` gives it to helm where helm runs)."""
    if release.is_local:
        return [str(Path(release.chart).expanduser())]
    if not release.version:
        return [release.chart]
    # A pinned repository chart is pulled once and reused, so later runs (and the
    # CRD check on every run) need no network.
    cached = cached_chart(lab, release)
    name = release.chart.rpartition("/")[2]
    if not cached.exists():
        tmp = cached.parent / f".pull-{os.getpid()}-{name}"
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            there = lab.machine.home / "charts" / f".pull-{os.getpid()}-{name}" if lab.host else tmp
            ctx.sh.run(helm(lab, "pull", release.chart, "--version", release.version, "--destination", there))
            if lab.host:  # pulled where helm runs: kept here too, so every later run needs no network
                ctx.sh.get(posixpath.join(ctx.sh.far(there), f"{name}-{release.version}.tgz"),
                           tmp / f"{name}-{release.version}.tgz")
                ctx.sh.remove(there)
            pulled = next(tmp.glob("*.tgz"), None)
            if pulled is None:
                raise StepFailed(f"helm pull {release.chart} {release.version} wrote no archive")
            os.replace(pulled, cached)
        finally:
            for leftover in tmp.glob("*"):
                leftover.unlink()
            tmp.rmdir()
    return [str(cached)]


def chart_there(ctx, source: list[str]) -> list[str]:
    """A chart of this machine (a directory or archive) uploaded where helm runs, if it changed; a
    repository chart's name as it is."""
    return [ctx.sh.put(source[0]) if is_local_chart(source[0]) else source[0], *source[1:]]


# --- reading what is installed -------------------------------------------
def installed(ctx, lab: Lab, release: Release) -> dict | None:
    """The release as `helm list` shows it (any status), or None."""
    out = ctx.sh.run(helm(lab, "list", "-n", release.namespace, "-a", "-o", "json",
                          "--filter", f"^{release.name}$")).stdout
    return next((r for r in json.loads(out or "[]") if r.get("name") == release.name), None)


def installed_values(ctx, lab: Lab, release: Release) -> dict:
    out = ctx.sh.run(helm(lab, "get", "values", release.name, "-n", release.namespace, "-o", "json")).stdout
    return normalise(json.loads(out or "null"))


def history(ctx, lab: Lab, release: Release) -> list[dict]:
    out = ctx.sh.run(helm(lab, "history", release.name, "-n", release.namespace, "-o", "json",
                          "--max", "50"), check=False)
    if out.returncode != 0:
        return []
    return json.loads(out.stdout or "[]")


def last_deployed_revision(revisions: Iterable[dict], below: int | None = None) -> int | None:
    """The newest revision helm marks deployed (below `below`), the one to roll back to."""
    good = [int(r["revision"]) for r in revisions
            if r.get("status") == "deployed" and (below is None or int(r["revision"]) < below)]
    return max(good) if good else None


def helm_message(exc: CommandError) -> str:
    """Helm's own error, without the `Error:` prefix and the usage noise."""
    lines = [ln.strip() for ln in exc.output.strip().splitlines() if ln.strip()]
    starts = [i for i, ln in enumerate(lines) if ln.startswith("Error:")]
    # "Error: 1 error occurred:" is followed by the errors themselves, one "* ..." a line
    text = " ".join(lines[starts[-1]:]) if starts else (lines[-1] if lines else str(exc))
    return text.removeprefix("Error:").strip()


# --- steps ----------------------------------------------------------------
def repo_step(lab: Lab, release: Release) -> Step:
    """The chart repository is known to helm at this URL, its index younger than the max age."""
    name, url = release.repo_name, (release.repo_url or "").rstrip("/")

    def repos(ctx) -> dict[str, str]:
        res = ctx.sh.run(helm(lab, "repo", "list", "-o", "json"), check=False)
        if res.returncode != 0:
            if "no repositories" in (res.stderr + res.stdout).lower():
                return {}
            raise CommandError(res.argv, res.returncode, res.stderr or res.stdout)
        return {r["name"]: r["url"].rstrip("/") for r in json.loads(res.stdout or "[]")}

    def index_age(ctx) -> float | None:
        cache = ctx.sh.run(helm(lab, "env", "HELM_REPOSITORY_CACHE")).stdout.strip()
        changed = ctx.sh.mtime(posixpath.join(cache, f"{name}-index.yaml"))
        return None if changed is None else max(0.0, time.time() - changed)

    def check(ctx):
        current = repos(ctx).get(name)
        if current is None:
            return change(f"add chart repository {name} ({url})")
        if current != url:
            return change(f"point chart repository {name} at {url} (it was {current})")
        age = index_age(ctx)
        if age is None:
            return change(f"fetch the index of chart repository {name}")
        if age > release.index_max_age:
            return change(f"refresh the index of chart repository {name} ({age / 3600:.0f} h old)")
        return ok(f"chart repository {name}: index {age / 3600:.1f} h old")

    def apply(ctx):
        current = repos(ctx).get(name)
        if current is None:
            ctx.sh.run(helm(lab, "repo", "add", name, url))
        elif current != url:
            ctx.sh.run(helm(lab, "repo", "add", name, url, "--force-update"))
        else:
            ctx.sh.run(helm(lab, "repo", "update", name))

    return Step(f"{release.name} chart repository {name}", check, apply)


def namespace_step(lab: Lab, release: Release) -> Step:
    """The release's namespace exists (and is not being deleted), with its default ServiceAccount."""
    namespace = release.namespace

    def phase(ctx) -> str | None:
        from kubernetes.client.exceptions import ApiException
        try:
            return ctx.kube.core.read_namespace(namespace).status.phase or "Active"
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def check(ctx):
        current = phase(ctx)
        if current is None:
            return change(f"create namespace {namespace}")
        if current == "Terminating":
            return change(f"namespace {namespace} is being deleted: wait for it to go, then create it again")
        return ok(f"namespace {namespace} exists")

    def apply(ctx):
        from kubernetes.client.exceptions import ApiException
        if phase(ctx) == "Terminating":
            wait_namespace_gone(ctx, namespace)
        try:
            ctx.kube.core.create_namespace({"metadata": {"name": namespace,
                                                         "labels": {"app.kubernetes.io/managed-by": "kindlab"}}})
        except ApiException as exc:
            if exc.status != 409:
                raise

    def wait(ctx):
        ctx.kube.wait_service_account(namespace, say=ctx.say)
        return None

    return Step(f"{release.name} namespace {namespace}", check, apply, wait=wait)


def wait_namespace_gone(ctx, namespace: str) -> str:
    from kubernetes.client.exceptions import ApiException
    from .kube import Verdict

    def evaluate():
        try:
            ctx.kube.core.read_namespace(namespace)
        except ApiException as exc:
            if exc.status == 404:
                return Verdict(True, f"namespace {namespace} deleted")
            raise
        return Verdict(False, f"namespace {namespace} is still terminating")

    return ctx.kube.wait_for(f"namespace {namespace} deletion", evaluate,
                             [(ctx.kube.core.list_namespace, {"field_selector": f"metadata.name={namespace}"})],
                             say=ctx.say)


# A CRD document's top-level kind line (top-level keys start at column 0; a schema's nested `kind` is indented).
CRD_DOCUMENT = re.compile(r"^kind:[ \t]*[\"']?CustomResourceDefinition[\"']?[ \t]*(?:#.*)?$", re.MULTILINE)


def crds_step(lab: Lab, release: Release) -> Step:
    """The chart's CRDs (subcharts' included), applied server-side and waited Established.

    Each CRD kindlab applies carries the sha256 of the chart's whole CRD text
    (`helm show crds`) in an annotation. A rerun whose chart yields the same
    text finds that mark on every CRD with one metadata-only list and is done
    in milliseconds; only a changed chart (or CRDs without the mark) pays for
    the full server-side dry-run of several megabytes.
    """
    plan: dict = {}

    def texts(ctx) -> tuple[list[str], str]:
        """The chart's CRD files and the sha256 of their text, without parsing them."""
        if "texts" not in plan:
            source = chart_source(ctx, lab, release)
            if is_local_chart(source[0]):
                # File by file: `helm show crds` joins the files without a separator, so two
                # files whose text does not begin with `---` would read as one document.
                found = list(crd_files(chart_files(source[0])).values())
            else:
                found = [ctx.sh.run(helm(lab, "show", "crds", *chart_there(ctx, source))).stdout]
            plan.update(texts=found, digest=hashlib.sha256("\n---\n".join(found).encode()).hexdigest())
        return plan["texts"], plan["digest"]

    def load(ctx) -> dict:
        if "crds" not in plan:
            found, digest = texts(ctx)
            crds = [obj for text in found for obj in kyaml.objects(text)]
            for crd in crds:
                crd.setdefault("metadata", {}).setdefault("annotations", {})[CRDS_HASH] = digest
            plan.update(crds=crds, names=[d["metadata"]["name"] for d in crds if d["kind"] == "CustomResourceDefinition"])
        return plan

    inner = applied(f"{release.name} CRDs", lab, lambda: plan["crds"])

    def check(ctx):
        found, digest = texts(ctx)
        marks = ctx.kube.crd_annotations()
        # Parsing megabytes of CRDs takes seconds of CPU (kube-prometheus-stack's: 4.7 s of a rerun on a
        # busy machine). As many CRDs carrying this text's sha256 as the text has CRD documents is the
        # same answer without parsing: only kindlab's apply of this very text puts that mark on a CRD.
        carrying = sum(1 for mark in marks.values() if mark.get(CRDS_HASH) == digest)
        documents = sum(len(CRD_DOCUMENT.findall(text)) for text in found)
        if documents and carrying == documents:
            plan["settled"] = True  # applied from this text and waited Established then: a CRD stays so
            return ok(f"{documents} CRDs as this chart has them (sha256 {digest[:12]})")
        crds, names = (load(ctx)[k] for k in ("crds", "names"))
        if not crds:
            return ok(f"chart {release.chart} has no CRDs")
        if names and all(marks.get(n, {}).get(CRDS_HASH) == digest for n in names):
            return ok(f"{len(names)} CRDs as this chart has them (sha256 {digest[:12]})")
        if names and not any(n in marks for n in names):  # none there yet: nothing to compare
            return change(f"create {len(names)} CRDs: {', '.join(names[:3])}" + (" ..." if len(names) > 3 else ""))
        result = inner.check(ctx)
        return result if result.needs_change else ok(f"{len(crds)} CRDs up to date")

    def apply(ctx):
        plan.pop("settled", None)
        load(ctx)
        return inner.apply(ctx)

    def wait(ctx):
        if plan.get("settled"):
            return None
        names = load(ctx)["names"]
        return wait_crds_established(ctx, names, what=f"{release.name} CRDs") if names else None

    return Step(f"{release.name} CRDs", check, apply, wait=wait)


def wait_crds_established(ctx, names: Sequence[str], what: str = "CRDs") -> str:
    """Until every named CRD is Established (its API served); a rejected name fails at once.

    CRDs are read as plain JSON (see Kube.get_json) and polled, not watched:
    they settle within a second, and a watch would model megabytes per event.
    """
    from .kube import Verdict

    def evaluate():
        waiting, failure = [], None
        for name in names:
            crd = ctx.kube.crd(name)
            if crd is None:
                waiting.append(f"{name} (not created yet)")
                continue
            conditions = {c.get("type"): c for c in (crd.get("status") or {}).get("conditions") or []}
            names_ok = conditions.get("NamesAccepted")
            if names_ok is not None and names_ok.get("status") == "False":
                failure = f"{what}: CRD {name} was refused: {names_ok.get('message')}"
            established = conditions.get("Established")
            if established is None or established.get("status") != "True":
                waiting.append(name)
        done = len(names) - len(waiting)
        if not waiting:
            return Verdict(True, f"{len(names)} CRDs Established")
        return Verdict(False, f"{done}/{len(names)} CRDs Established; waiting for {', '.join(waiting[:3])}",
                       failure)

    return ctx.kube.wait_for(what, evaluate, [], say=ctx.say, recheck=0.5)


def release_step(lab: Lab, release: Release) -> Step:
    """The release deployed with the desired chart and values; its pods Ready."""
    def check(ctx):
        current = installed(ctx, lab, release)
        if current is None:
            version = f" {release.version}" if release.version else ""
            return change(f"install {release.chart}{version} as {release.name} in {release.namespace}")
        status = current.get("status", "")
        if status != "deployed":
            return change(f"repair: release {release.name} is {status} (revision {current.get('revision')})")
        want_chart = desired_chart(release)
        paths = values_diff(installed_values(ctx, lab, release), load_values(release))
        drift = describe_drift(current.get("chart", ""), want_chart, paths)
        if release.is_local:  # a local chart can change under the same version: its files count
            have, want = installed_digest(ctx, release), chart_digest(release)
            if have != want:
                drift = "; ".join(filter(None, [drift, f"chart files changed (digest {have or 'none'} -> {want})"]))
        if drift:
            return change(f"upgrade ({drift})")
        return release_health(ctx, lab, release, f"{release.name} {current.get('chart')} deployed "
                                                 f"(revision {current.get('revision')})")

    def apply(ctx):
        current = installed(ctx, lab, release)
        if current is not None and current.get("status") not in ("deployed", "failed", "superseded"):
            unstick(ctx, lab, release, current)
            current = installed(ctx, lab, release)
        return upgrade(ctx, lab, release, previous=current)

    def wait(ctx):
        current = installed(ctx, lab, release)
        if current is None or current.get("status") != "deployed":
            state = "not installed" if current is None else current.get("status")
            raise StepFailed(f"release {release.name} is {state}: rerun the install")
        if not release.wait:
            return None
        wait_rollouts_observed(ctx, release.namespace)
        return ctx.kube.wait_namespace_ready(release.namespace, say=ctx.say,
                                             what=f"release {release.name}", min_pods=release.min_pods,
                                             refusals=release.refusals)

    return Step(f"{release.name} release", check, apply, wait=wait)


def hook_jobs_waiting(kube, namespace: str, context: str) -> tuple[list[str], str | None]:
    """What Helm waits for: its hook Jobs not yet complete, a line each with their pods' reasons,
    and a failure sentence when one of them cannot complete (a pod that will never run, a failed Job)."""
    from .kube import next_step, pod_state

    lines, failure = [], None
    for job in kube.batch.list_namespaced_job(namespace).items:
        hook = (job.metadata.annotations or {}).get(HELM_HOOK)
        if not hook or (job.status.succeeded or 0) > 0:
            continue
        name = job.metadata.name
        states = [pod_state(p) for p in kube.core.list_namespaced_pod(
            namespace, label_selector=f"job-name={name}").items]
        pods = "; ".join(s.describe() for s in states) or "no pod yet"
        lines.append(f"{hook} hook job {namespace}/{name} ({pods})")
        failed = next((c for c in job.status.conditions or [] if c.type == "Failed" and c.status == "True"), None)
        terminal = next((s for s in states if s.terminal), None)
        if failure is None and failed is not None:
            failure = (f"{hook} hook job {namespace}/{name} failed: {failed.reason}: {failed.message}; "
                       f"kubectl --context {context} -n {namespace} logs job/{name}")
        elif failure is None and terminal is not None:
            failure = (f"{hook} hook job {namespace}/{name} cannot complete: {terminal.describe()}; "
                       + next_step(terminal, context, namespace))
    return lines, failure


class HookWatch:
    """While helm installs, say which hook Jobs it waits for; stop helm when one cannot complete."""

    def __init__(self, ctx, namespace: str, context: str, interval: float = 2.0):
        self.ctx, self.namespace, self.context, self.interval = ctx, namespace, context, interval
        self.stop = threading.Event()   # set: helm is ended early (see LocalShell.run)
        self.failure: str | None = None
        self.waiting: list[str] = []
        self._done = threading.Event()

    def __enter__(self):
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._done.set()

    def _watch(self) -> None:
        started = time.monotonic()
        while not self._done.wait(self.interval):
            try:
                self.waiting, self.failure = hook_jobs_waiting(self.ctx.kube, self.namespace, self.context)
            except Exception:  # noqa: BLE001 - helm's own result decides; this only reports
                continue
            if self.failure:
                self.stop.set()
                return
            if self.waiting:
                self.ctx.say(f"helm waits for {'; '.join(self.waiting[:2])} ({time.monotonic() - started:.0f}s)")


def chart_digest(release: Release) -> str:
    """A local chart's identity beyond its version: 32 hex digits over its files' names and bytes."""
    digest = hashlib.sha256()
    for name, data in sorted(chart_files(release.chart).items()):
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()[:32]


def installed_digest(ctx, release: Release) -> str | None:
    """The chart digest kindlab recorded on the deployed revision (a label of helm's release Secret)."""
    # metadata only: a release Secret holds the whole release, hundreds of KB for a big chart, to move and model
    from .kube import METADATA_LIST
    items = ctx.kube.get_json(f"/api/v1/namespaces/{release.namespace}/secrets", accept=METADATA_LIST,
                              labelSelector=f"owner=helm,name={release.name},status=deployed").get("items") or []
    labels = [item["metadata"].get("labels") or {} for item in items]
    latest = max(labels, key=lambda found: int(found.get("version", 0)), default=None)
    return latest.get(DIGEST_LABEL) if latest is not None else None


def release_health(ctx, lab: Lab, release: Release, detail: str):
    """A deployed release is only ok while its pods run: a pod that cannot recover fails the check, and
    under --check pods still starting are 'unknown' (the wait covers them in a real run)."""
    from .kube import explain

    pods = [p for p in ctx.kube.core.list_namespaced_pod(release.namespace).items if p.status.phase != "Succeeded"]
    ready, progress, failure = explain(pods, len(pods), f"release {release.name}", lab.context, release.namespace)
    if failure:
        raise StepFailed(f"{failure}; the release is deployed but does not run")
    if ready < len(pods) and lab.check_mode:
        return unknown(f"its pods Ready: {progress}")
    return ok(detail)


def upgrade(ctx, lab: Lab, release: Release, previous: dict | None) -> str:
    """`helm upgrade --install` with the merged values on stdin; roll back a failed upgrade.

    While helm runs, its hook Jobs are reported as progress; one that cannot
    complete ends helm at once and is named, instead of a timeout later.
    """
    values = load_values(release)
    argv = helm(lab, "upgrade", "--install", release.name, *chart_there(ctx, chart_source(ctx, lab, release)),
                "-n", release.namespace, "--reset-values", "-f", "-", "--timeout", ctx.deadline.flag())
    if release.crds_from_chart:
        argv.append("--skip-crds")
    if release.is_local:
        argv += ["--labels", f"{DIGEST_LABEL}={chart_digest(release)}"]
    watch = HookWatch(ctx, release.namespace, lab.context)
    try:
        with watch:
            ctx.sh.run(argv, input=json.dumps(values), secrets=secret_strings(values), stop=watch.stop)
    except CommandError as exc:
        if watch.failure:
            raise StepFailed(f"release {release.name}: {watch.failure}; helm was stopped and the release "
                             "is repaired on the next run") from None
        if is_transient(exc):
            raise
        message = helm_message(exc)
        still, _ = _safely(lambda: hook_jobs_waiting(ctx.kube, release.namespace, lab.context), ([], None))
        if still:
            message += f"; helm was still waiting for {'; '.join(still[:3])}"
        revisions = history(ctx, lab, release)
        failed = max((int(r["revision"]) for r in revisions), default=None)
        good = last_deployed_revision(revisions, below=failed) if previous is not None else None
        if good is None:
            raise StepFailed(f"helm could not install release {release.name} in {release.namespace}: "
                             f"{message}; fix the chart or its values and run again") from None
        ctx.say(f"upgrade failed; rolling back to revision {good}")
        ctx.sh.run(helm(lab, "rollback", release.name, str(good), "-n", release.namespace,
                        "--timeout", ctx.deadline.flag()))
        raise StepFailed(f"helm upgrade of release {release.name} failed and was rolled back to revision "
                         f"{good}: {message}; the release runs as before: fix the chart or its values "
                         "and run again") from None
    current = installed(ctx, lab, release) or {}
    verb = "installed" if previous is None else "upgraded"
    return f"{verb} {release.name} {current.get('chart', release.chart)} (revision {current.get('revision')})"


def _safely(read, default):
    """A read for a message: its answer, or `default` if the cluster cannot say."""
    try:
        return read()
    except Exception:  # noqa: BLE001 - only enriches an error that is already being raised
        return default


def unstick(ctx, lab: Lab, release: Release, current: dict) -> None:
    """A release an interrupted run left pending-*: back to its last deployed revision, or removed."""
    status = current.get("status")
    revision = int(current.get("revision") or 0)
    good = last_deployed_revision(history(ctx, lab, release), below=revision) if status in PENDING else None
    if good is not None:
        ctx.say(f"release {release.name} was left {status}: rolling back to revision {good}")
        ctx.sh.run(helm(lab, "rollback", release.name, str(good), "-n", release.namespace,
                        "--timeout", ctx.deadline.flag()))
    else:
        ctx.say(f"release {release.name} was left {status} with nothing deployed: uninstalling it first")
        ctx.sh.run(helm(lab, "uninstall", release.name, "-n", release.namespace, "--wait",
                        "--timeout", ctx.deadline.flag()))


def wait_rollouts_observed(ctx, namespace: str) -> str:
    """Until the controllers have seen the latest spec, so readiness is not read off stale status."""
    from .kube import Verdict

    def evaluate():
        stale = [f"deployment {d.metadata.name}" for d in ctx.kube.apps.list_namespaced_deployment(namespace).items
                 if (d.status.observed_generation or 0) < (d.metadata.generation or 0)]
        stale += [f"statefulset {s.metadata.name}" for s in ctx.kube.apps.list_namespaced_stateful_set(namespace).items
                  if (s.status.observed_generation or 0) < (s.metadata.generation or 0)]
        return Verdict(not stale, "rollouts observed" if not stale else f"waiting for {', '.join(stale[:3])}")

    return ctx.kube.wait_for(f"rollouts in {namespace}", evaluate,
                             [(ctx.kube.apps.list_namespaced_deployment, {"namespace": namespace})],
                             say=ctx.say)


def release_steps(lab: Lab, release: Release, prepare: Sequence[Step] = ()) -> list[Step]:
    """Repository (repo charts), namespace, `prepare` (e.g. a Secret the chart reads), CRDs, release."""
    steps = []
    if release.repo_name and not release.is_local:
        if not release.repo_url:
            raise ValueError(f"release {release.name}: repo_name {release.repo_name!r} needs a repo_url")
        steps.append(repo_step(lab, release))
    steps.append(namespace_step(lab, release))
    steps.extend(prepare)
    if release.crds_from_chart:
        steps.append(crds_step(lab, release))
    steps.append(release_step(lab, release))
    return steps


def uninstall_steps(lab: Lab, release: Release, delete_namespace: bool = False) -> list[Step]:
    """`helm uninstall` when installed (absent is fine); the namespace too with delete_namespace.

    CRDs stay: deleting one deletes every object of its kind in the cluster.
    """
    def check(ctx):
        current = installed(ctx, lab, release)
        if current is None:
            return ok(f"release {release.name} not installed")
        return change(f"uninstall {release.name} ({current.get('chart')}, {current.get('status')})")

    def apply(ctx):
        ctx.sh.run(helm(lab, "uninstall", release.name, "-n", release.namespace, "--wait",
                        "--timeout", ctx.deadline.flag()))

    steps = [Step(f"{release.name} release absent", check, apply)]
    if delete_namespace:
        steps.append(namespace_absent_step(lab, release.namespace, f"{release.name} namespace {release.namespace} absent"))
    return steps


def namespace_absent_step(lab: Lab, namespace: str, name: str) -> Step:
    def present(ctx) -> bool:
        from kubernetes.client.exceptions import ApiException
        try:
            ctx.kube.core.read_namespace(namespace)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def check(ctx):
        return change(f"delete namespace {namespace}") if present(ctx) else ok(f"namespace {namespace} absent")

    def apply(ctx):
        from kubernetes.client.exceptions import ApiException
        try:
            ctx.kube.core.delete_namespace(namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
        return wait_namespace_gone(ctx, namespace)

    return Step(name, check, apply)


__all__ = ["Release", "local_release", "release_steps", "uninstall_steps", "load_values", "values_diff", "deep_merge",
           "normalise", "describe_drift", "helm", "installed", "DEFAULT_INDEX_MAX_AGE"]

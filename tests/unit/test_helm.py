"""The Helm release step's decisions, with a fake shell standing in for helm."""
import datetime
import json
import os
import time
from pathlib import Path

import pytest

from playbooks.core import helm as helm_mod
from playbooks.core.commands import LocalShell, CommandError, Result
from playbooks.core.helm import (Release, deep_merge, describe_drift, last_deployed_revision, load_values,
                                 normalise, release_step, release_steps, repo_step, secret_strings,
                                 uninstall_steps, values_diff)
from playbooks.core.runner import StepContext
from playbooks.core.settings import Lab
from playbooks.core.steps import StepFailed

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "charts" / "demo"


class FakeHelm(LocalShell):
    """Answers helm argument lists from a little state; records every call (files: this machine's)."""

    def __init__(self, releases=None, values=None, repos=None, cache_dir="", fail_upgrade="", history=()):
        self.releases = releases or []
        self.values = values
        self.repos = repos
        self.cache_dir = cache_dir
        self.fail_upgrade = fail_upgrade
        self.history_rows = list(history)
        self.calls: list[tuple[list[str], str | None]] = []

    def run(self, argv, *, input=None, check=True, secrets=(), **kw):
        argv = [str(a) for a in argv]
        self.calls.append((argv, input))
        sub = [a for a in argv[5:] if not a.startswith("-")][:2]  # after helm --kubeconfig X --kube-context Y
        out, code, err = "", 0, ""
        if sub[:2] == ["list"] or sub[:1] == ["list"]:
            out = json.dumps(self.releases)
        elif sub == ["get", "values"]:
            out = json.dumps(self.values)
        elif sub[:1] == ["history"]:
            out = json.dumps(self.history_rows)
        elif sub == ["repo", "list"]:
            if self.repos is None:
                code, err = 1, "Error: no repositories to show"
            else:
                out = json.dumps([{"name": n, "url": u} for n, u in self.repos.items()])
        elif sub[:1] == ["env"]:
            out = self.cache_dir + "\n"
        elif sub[:1] == ["upgrade"] and self.fail_upgrade:
            code, err = 1, f"Error: UPGRADE FAILED: {self.fail_upgrade}"
        if check and code:
            raise CommandError(argv, code, err, secrets)
        return Result(tuple(argv), code, out, err)

    def commands(self):
        return [" ".join(a[5:]) for a, _ in self.calls]

    def close(self):
        pass


class FakeKube:
    """The cluster as the release check reads it: helm's release Secret (with kindlab's chart digest
    label) and the release's pods (none here: a release without pods is healthy)."""

    def __init__(self, digest=None):
        from types import SimpleNamespace as NS
        from playbooks.core.helm import DIGEST_LABEL, chart_digest
        labels = {"version": "1", DIGEST_LABEL: digest or chart_digest(Release("demo", "ns", str(DEMO)))}
        self.core = NS(list_namespaced_pod=lambda ns: NS(items=[]))
        self.labels = labels

    def get_json(self, path, accept="application/json", **query):
        from playbooks.core.kube import METADATA_LIST
        assert path.endswith("/secrets") and accept == METADATA_LIST  # the Secret's metadata, not its release
        return {"items": [{"metadata": {"labels": self.labels}}]}


def ctx_for(shell, lab=None, kube=None):
    ctx = StepContext(lab or Lab(provider="kwok", cluster="t", kubeconfig=Path("/k/config")), shell,
                      kube_factory=lambda: kube or FakeKube())
    return ctx


def deployed(chart="demo-0.1.0", revision="1", status="deployed", name="demo"):
    return [{"name": name, "namespace": "ns", "revision": revision, "status": status, "chart": chart}]


# --- values ---------------------------------------------------------------
def test_deep_merge_merges_maps_and_replaces_everything_else():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    assert deep_merge(base, {"a": {"c": [3], "e": None}, "d": {"y": 1}}) == \
        {"a": {"b": 1, "c": [3], "e": None}, "d": {"y": 1}}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": "x"}  # not modified


def test_normalise_reads_values_as_helm_stores_them():
    assert normalise(None) == {}
    assert normalise({"a": 1.0, "b": 1.5, "c": ("x", 2.0), "d": datetime.date(2024, 1, 2), "e": None}) == \
        {"a": 1, "b": 1.5, "c": ["x", 2], "d": "2024-01-02", "e": None}
    assert normalise({1: "one", "x": {2.5: "y"}}) == {"1": "one", "x": {"2.5": "y"}}


@pytest.mark.parametrize("current,desired,paths", [
    ({"port": 80}, {"port": 80}, []),
    ({"port": 80}, {"port": "80"}, ["port"]),  # a string is not a number
    ({"on": True}, {"on": 1}, ["on"]),  # nor is a boolean
    ({"a": {"b": None}}, {"a": {}}, ["a.b"]),  # null deletes a chart default: it counts
    ({"a": {"b": None}}, {"a": {"b": None}}, []),
    ({"a": {"b": 1, "c": 2}}, {"a": {"b": 2, "c": 2}, "d": [1]}, ["a.b", "d"]),
    ({"l": [1, {"x": 1}]}, {"l": [1, {"x": 1}]}, []),
    ({"l": [1, True]}, {"l": [1, 1]}, ["l"]),
    ({}, {}, []),
])
def test_values_diff_names_the_keys_that_differ(current, desired, paths):
    assert values_diff(current, desired) == paths


def test_load_values_merges_files_in_order_then_inline_values(tmp_path):
    (tmp_path / "a.yaml").write_text("replicas: 1\nimage: {repo: x, tag: '1.0'}\nport: 80\n")
    (tmp_path / "b.yaml").write_text("image: {tag: '2.0'}\nextra: 1.0\n")
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    rel = Release("demo", "ns", str(DEMO), values_files=(tmp_path / "a.yaml", tmp_path / "empty.yaml",
                                                       str(tmp_path / "b.yaml")),
                  values={"replicas": 3, "image": {"repo": "y"}})
    assert load_values(rel) == {"replicas": 3, "image": {"repo": "y", "tag": "2.0"}, "port": 80, "extra": 1}


def test_load_values_refuses_a_file_that_is_not_a_mapping(tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(StepFailed, match="must hold a mapping"):
        load_values(Release("demo", "ns", str(DEMO), values_files=(tmp_path / "list.yaml",)))
    with pytest.raises(StepFailed, match="cannot read values file"):
        load_values(Release("demo", "ns", str(DEMO), values_files=(tmp_path / "missing.yaml",)))


def test_describe_drift_names_chart_and_at_most_six_keys():
    assert describe_drift("demo-0.1.0", "demo-0.2.0", []) == "chart demo-0.1.0 -> demo-0.2.0"
    assert describe_drift("demo-0.1.0", None, ["a.b", "c"]) == "values keys a.b, c"
    assert describe_drift("x-1", "x-1", list("abcdefgh")).endswith("f and 2 more")
    assert describe_drift("x-1", "x-1", []) == ""


def test_secret_strings_finds_values_under_secret_looking_keys():
    values = {"adminPassword": "hunter22", "auth": {"api-key": "k-123456"}, "secrets": {"a": ["s3cr3t!"]},
              "name": "visible", "password_len": 8}
    assert sorted(secret_strings(values)) == ["hunter22", "k-123456", "s3cr3t!"]


# --- the release step -------------------------------------------------------
def test_check_reports_install_when_absent():
    shell = FakeHelm()
    result = release_step(Lab(), Release("demo", "ns", str(DEMO))).check(ctx_for(shell))
    assert result.needs_change and result.detail.startswith("install")


def test_check_is_ok_when_chart_and_values_match():
    shell = FakeHelm(releases=deployed(), values={"replicas": 2, "port": 80})
    rel = Release("demo", "ns", str(DEMO), values={"replicas": 2.0, "port": 80})
    result = release_step(Lab(), rel).check(ctx_for(shell))
    assert result.state == "ok", result.detail
    assert not any(c.startswith("upgrade") for c in shell.commands())


def test_check_names_chart_and_value_drift():
    shell = FakeHelm(releases=deployed(chart="demo-0.0.9"), values={"replicas": 2, "port": "80"})
    result = release_step(Lab(), Release("demo", "ns", str(DEMO), values={"replicas": 3, "port": 80})).check(
        ctx_for(shell))
    assert result.detail == "upgrade (chart demo-0.0.9 -> demo-0.1.0; values keys port, replicas)"


def test_check_compares_repo_chart_versions_without_any_download():
    shell = FakeHelm(releases=deployed(chart="kube-prometheus-stack-79.8.0", name="monitoring"), values=None)
    rel = Release("monitoring", "ns", "prometheus-community/kube-prometheus-stack", version="79.9.0")
    result = release_step(Lab(), rel).check(ctx_for(shell))
    assert result.detail == "upgrade (chart kube-prometheus-stack-79.8.0 -> kube-prometheus-stack-79.9.0)"
    assert not any("pull" in c or "show" in c for c in shell.commands())


@pytest.mark.parametrize("status", ["failed", "pending-install", "pending-upgrade", "pending-rollback"])
def test_check_asks_for_a_repair_of_a_broken_release(status):
    shell = FakeHelm(releases=deployed(status=status, revision="4"))
    result = release_step(Lab(), Release("demo", "ns", str(DEMO))).check(ctx_for(shell))
    assert result.detail == f"repair: release demo is {status} (revision 4)"


def test_apply_sends_values_on_stdin_with_explicit_context_and_never_in_argv():
    shell = FakeHelm(releases=deployed())
    lab = Lab(provider="kwok", cluster="t", kubeconfig=Path("/k/config"), timeout=90)
    rel = Release("demo", "ns", str(DEMO), values={"adminPassword": "s3cr3t-value"}, crds_from_chart=True)
    detail = release_step(lab, rel).apply(ctx_for(shell, lab))
    argv, stdin = next((a, i) for a, i in shell.calls if "upgrade" in a)
    assert argv[:5] == ["helm", "--kubeconfig", "/k/config", "--kube-context", "kwok-t"]
    assert argv[5:8] == ["upgrade", "--install", "demo"]
    for flag in ("--reset-values", "--skip-crds"):
        assert flag in argv
    assert argv[argv.index("-f") + 1] == "-" and argv[argv.index("-n") + 1] == "ns"
    assert argv[argv.index("--timeout") + 1] == "90s"
    assert not any("s3cr3t" in a for a in argv)
    assert json.loads(stdin) == {"adminPassword": "s3cr3t-value"}
    assert detail.startswith("upgraded demo demo-0.1.0")


def test_a_failed_upgrade_is_rolled_back_to_the_last_deployed_revision():
    history = [{"revision": 1, "status": "superseded"}, {"revision": 2, "status": "deployed"},
               {"revision": 3, "status": "failed"}]
    shell = FakeHelm(releases=deployed(revision="2"), history=history,
                     fail_upgrade='cannot patch "demo" with kind Service: Service "demo" is invalid: '
                                  'spec.ports[0].port: Invalid value: 70000')
    with pytest.raises(StepFailed) as failed:
        release_step(Lab(), Release("demo", "ns", str(DEMO))).apply(ctx_for(shell))
    assert "helm upgrade of release demo failed and was rolled back to revision 2" in str(failed.value)
    assert "Invalid value: 70000" in str(failed.value) and "UPGRADE FAILED" in str(failed.value)
    assert any(c.startswith("rollback demo 2 ") for c in shell.commands())


def test_a_failed_install_has_nothing_to_roll_back_to():
    shell = FakeHelm(releases=[], history=[{"revision": 1, "status": "failed"}], fail_upgrade="chart broken")
    with pytest.raises(StepFailed, match="helm could not install release demo in ns: UPGRADE FAILED: chart broken"):
        release_step(Lab(), Release("demo", "ns", str(DEMO))).apply(ctx_for(shell))
    assert not any(c.startswith("rollback") for c in shell.commands())


def test_an_operation_in_progress_is_left_to_the_runner_to_retry():
    shell = FakeHelm(releases=deployed(), fail_upgrade="another operation (install/upgrade/rollback) is in progress")
    with pytest.raises(CommandError):
        release_step(Lab(), Release("demo", "ns", str(DEMO))).apply(ctx_for(shell))
    assert not any(c.startswith("rollback") for c in shell.commands())


def test_a_pending_upgrade_goes_back_to_its_deployed_revision_before_upgrading():
    shell = FakeHelm(releases=deployed(status="pending-upgrade", revision="5"),
                     history=[{"revision": 4, "status": "deployed"}, {"revision": 5, "status": "pending-upgrade"}])
    release_step(Lab(), Release("demo", "ns", str(DEMO))).apply(ctx_for(shell))
    commands = shell.commands()
    rollback = next(i for i, c in enumerate(commands) if c.startswith("rollback demo 4"))
    assert rollback < next(i for i, c in enumerate(commands) if c.startswith("upgrade"))


def test_a_pending_install_is_uninstalled_before_installing_again():
    shell = FakeHelm(releases=deployed(status="pending-install"), history=[{"revision": 1, "status": "pending-install"}])
    release_step(Lab(), Release("demo", "ns", str(DEMO))).apply(ctx_for(shell))
    commands = shell.commands()
    assert commands.index(next(c for c in commands if c.startswith("uninstall demo"))) < \
        commands.index(next(c for c in commands if c.startswith("upgrade")))


def test_last_deployed_revision():
    rows = [{"revision": 1, "status": "superseded"}, {"revision": 2, "status": "deployed"},
            {"revision": 3, "status": "failed"}]
    assert last_deployed_revision(rows) == 2
    assert last_deployed_revision(rows, below=2) is None
    assert last_deployed_revision([]) is None


# --- the repository step ------------------------------------------------------
def repo_release(max_age=3600.0):
    return Release("demo", "ns", "kl/demo", version="0.1.0", repo_name="kl", repo_url="http://127.0.0.1:1/charts/",
                   index_max_age=max_age)


def test_repo_missing_is_added(tmp_path):
    shell = FakeHelm(repos=None, cache_dir=str(tmp_path))
    step = repo_step(Lab(), repo_release())
    assert step.check(ctx_for(shell)).detail == "add chart repository kl (http://127.0.0.1:1/charts)"
    step.apply(ctx_for(shell))
    assert "repo add kl http://127.0.0.1:1/charts" in shell.commands()


def test_repo_at_another_url_is_re_added_with_force_update(tmp_path):
    shell = FakeHelm(repos={"kl": "https://elsewhere.example/"}, cache_dir=str(tmp_path))
    step = repo_step(Lab(), repo_release())
    assert "it was https://elsewhere.example" in step.check(ctx_for(shell)).detail
    step.apply(ctx_for(shell))
    assert shell.commands()[-1] == "repo add kl http://127.0.0.1:1/charts --force-update"


def test_repo_index_is_refreshed_only_when_older_than_the_max_age(tmp_path):
    index = tmp_path / "kl-index.yaml"
    index.write_text("apiVersion: v1\n")
    shell = FakeHelm(repos={"kl": "http://127.0.0.1:1/charts"}, cache_dir=str(tmp_path))
    step = repo_step(Lab(), repo_release(max_age=3600))
    assert step.check(ctx_for(shell)).state == "ok"
    assert not any(c.startswith(("repo update", "repo add")) for c in shell.commands())
    old = time.time() - 2 * 3600
    os.utime(index, (old, old))
    result = step.check(ctx_for(shell))
    assert result.detail == "refresh the index of chart repository kl (2 h old)"
    step.apply(ctx_for(shell))
    assert shell.commands()[-1] == "repo update kl"


def test_steps_are_named_after_the_release_so_plays_can_share_a_repository():
    rel = repo_release()
    names = [s.name for s in release_steps(Lab(), rel) + release_steps(Lab(), Release(
        "other", "ns2", "kl/other", version="1.0.0", repo_name="kl", repo_url="http://127.0.0.1:1/charts"))]
    assert len(names) == len(set(names))
    assert [s.name for s in release_steps(Lab(), rel)] == ["demo chart repository kl", "demo namespace ns",
                                                          "demo release"]
    assert [s.name for s in release_steps(Lab(), Release("d", "n", str(DEMO), crds_from_chart=True))] == \
        ["d namespace n", "d CRDs", "d release"]


def test_uninstall_is_ok_when_absent_and_uninstalls_when_present():
    step = uninstall_steps(Lab(), Release("demo", "ns", str(DEMO)))[0]
    assert step.check(ctx_for(FakeHelm())).state == "ok"
    shell = FakeHelm(releases=deployed())
    assert step.check(ctx_for(shell)).detail == "uninstall demo (demo-0.1.0, deployed)"
    step.apply(ctx_for(shell))
    assert shell.commands()[-1].startswith("uninstall demo -n ns --wait")


def test_a_pinned_repo_chart_is_pulled_once_and_reused(tmp_path):
    class Pulling(FakeHelm):
        def run(self, argv, **kw):
            argv = [str(a) for a in argv]
            if "pull" in argv:
                dest = Path(argv[argv.index("--destination") + 1])
                (dest / "demo-0.1.0.tgz").write_bytes(b"archive")
            return super().run(argv, **kw)

    lab = Lab(home=tmp_path)
    shell = Pulling()
    ctx = ctx_for(shell, lab)
    first = helm_mod.chart_source(ctx, lab, repo_release())
    second = helm_mod.chart_source(ctx, lab, repo_release())
    assert first == second == [str(tmp_path / "charts" / "kl-demo-0.1.0.tgz")]
    assert sum("pull" in c for c in shell.commands()) == 1
    assert [p.name for p in (tmp_path / "charts").iterdir()] == ["kl-demo-0.1.0.tgz"]


def test_local_release_drops_the_repository_and_reads_the_version_from_the_chart():
    rel = repo_release()
    assert helm_mod.local_release(rel, None) is rel
    local = helm_mod.local_release(rel, DEMO)
    assert (local.chart, local.version, local.repo_name, local.repo_url) == (str(DEMO), None, None, None)
    assert helm_mod.desired_chart(local) == "demo-0.1.0"
    assert [s.name for s in release_steps(Lab(), local)] == ["demo namespace ns", "demo release"]


def _crd_text(plural):
    return (f"apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n"
            f"  name: {plural}.example.com\nspec:\n  group: example.com\n")


def test_crd_files_are_read_one_by_one_including_packaged_subcharts(tmp_path):
    """`helm show crds` joins CRD files with no separator: two files without a leading `---`
    read as one document there. Reading the files themselves keeps every CRD."""
    import io
    import tarfile

    from playbooks.core import kyaml
    from playbooks.core.helm import chart_files, crd_files

    chart = tmp_path / "top"
    (chart / "crds").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: top\nversion: 1.0.0\n")
    (chart / "crds" / "a.yaml").write_text(_crd_text("alphas"))
    (chart / "crds" / "b.yaml").write_text(_crd_text("betas"))
    (chart / "templates").mkdir()
    (chart / "templates" / "crds-like.yaml").write_text(_crd_text("templated"))  # not in crds/: helm renders it
    (chart / "charts" / "unpacked" / "crds").mkdir(parents=True)
    (chart / "charts" / "unpacked" / "crds" / "c.yaml").write_text(_crd_text("gammas"))
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz") as archive:
        for name, text in (("sub/Chart.yaml", "apiVersion: v2\nname: sub\nversion: 0.1.0\n"),
                           ("sub/crds/d.yaml", _crd_text("deltas"))):
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            archive.addfile(info, io.BytesIO(text.encode()))
    (chart / "charts" / "sub-0.1.0.tgz").write_bytes(packed.getvalue())

    files = crd_files(chart_files(chart))
    assert list(files) == ["charts/sub/crds/d.yaml", "charts/unpacked/crds/c.yaml", "crds/a.yaml", "crds/b.yaml"]
    names = [o["metadata"]["name"] for text in files.values() for o in kyaml.objects(text)]
    assert sorted(names) == ["alphas.example.com", "betas.example.com", "deltas.example.com", "gammas.example.com"]
    # the joined stream loses a CRD: the trait this guards against
    assert len(kyaml.objects("".join(files.values()))) < 4


def test_the_crd_documents_are_counted_without_parsing_as_parsing_counts_them(tmp_path):
    """A rerun's CRD check counts the chart's CRD documents in the text (parsing kube-prometheus-stack's
    4.4 MB took seconds): the count must equal what parsing finds, the real chart's CRDs included."""
    from playbooks.core import kyaml
    from playbooks.core.helm import CRD_DOCUMENT, chart_files, crd_files

    from ..conftest import SHARED_SOURCES

    nested = (_crd_text("alphas") + "  names:\n    kind: Alpha\n  versions:\n  - schema:\n      openAPIV3Schema:\n"
              "        properties:\n          kind:\n            type: string\n")
    texts = [nested, "---\n# a comment\n" + _crd_text("betas") + "---\n" + _crd_text("gammas").replace(
        "kind: CustomResourceDefinition", 'kind: "CustomResourceDefinition"  # quoted')]
    real = SHARED_SOURCES / "charts" / "kube-prometheus-stack-79.9.0.tgz"
    if real.is_file():
        texts += list(crd_files(chart_files(real)).values())
    parsed = sum(1 for text in texts for obj in kyaml.objects(text) if obj.get("kind") == "CustomResourceDefinition")
    assert sum(len(CRD_DOCUMENT.findall(text)) for text in texts) == parsed
    assert parsed >= 3 + (10 if real.is_file() else 0)

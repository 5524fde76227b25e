"""The image catalog: inputs hashes and tags, and what a build decides to do (no engine needed)."""
import os
import shutil

import pytest

from playbooks import images, toolchain
from playbooks.core.commands import Result
from playbooks.core.settings import Lab
from playbooks.core.steps import CHANGED, SKIPPED

from ..conftest import source_folders
from .test_offline import Engine, Ctx


@pytest.fixture
def scratch_catalog(tmp_path, monkeypatch):
    """The catalog's folders copied somewhere a test may change them."""
    shutil.copytree(images.IMAGES_DIR, tmp_path / "images")
    monkeypatch.setattr(images, "IMAGES_DIR", tmp_path / "images")
    images.inputs_hash.cache_clear()
    yield tmp_path / "images"
    images.inputs_hash.cache_clear()


def test_a_changed_file_changes_its_image_and_the_images_built_from_it(scratch_catalog):
    before = {name: images.inputs_hash(name) for name in images.CATALOG}
    dockerfile = scratch_catalog / "nginx" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "\n# changed\n")
    images.inputs_hash.cache_clear()
    after = {name: images.inputs_hash(name) for name in images.CATALOG}
    assert [n for n in images.CATALOG if before[n] != after[n]] == ["nginx"]
    cni = scratch_catalog / "kindlab-cni" / "kindlab-cni"
    cni.write_text(cni.read_text() + "\n# changed\n")
    images.inputs_hash.cache_clear()
    changed = [n for n in images.CATALOG if after[n] != images.inputs_hash(n)]
    assert changed == ["kindlab-cni", "node"]  # preloaded into the node image


def test_an_edit_of_the_crawler_rebuilds_only_the_thin_ray_image_and_byte_code_is_no_input(tmp_path, monkeypatch):
    """The crawler is baked into kindlab's Ray image: an edit must give the RayCluster a new image (so no job
    runs a stale crawler), without Ray's pip install again; running the tests (byte code) or editing its README
    changes nothing."""
    shutil.copytree(images.ROOT / "crawler", tmp_path / "crawler", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(images, "ROOT", tmp_path)
    images.inputs_hash.cache_clear()
    try:
        before = {name: images.inputs_hash(name) for name in images.CATALOG}
        (tmp_path / "crawler" / "__pycache__").mkdir()
        (tmp_path / "crawler" / "__pycache__" / "parse.cpython-311.pyc").write_bytes(b"byte code")
        readme = tmp_path / "crawler" / "README.md"
        readme.write_text(readme.read_text() + "\nA line of docs.\n")
        images.inputs_hash.cache_clear()
        assert {name: images.inputs_hash(name) for name in images.CATALOG} == before
        parse = tmp_path / "crawler" / "parse.py"
        parse.write_text(parse.read_text() + "\n# changed\n")
        images.inputs_hash.cache_clear()
        assert [n for n in images.CATALOG if images.inputs_hash(n) != before[n]] == ["ray"]
    finally:
        images.inputs_hash.cache_clear()


def test_a_new_binary_pin_changes_the_images_that_hold_it(monkeypatch):
    before = images.inputs_hash("registry"), images.inputs_hash("node")
    spec = toolchain.COMPONENTS["registry"]
    monkeypatch.setitem(toolchain.COMPONENTS, "registry", spec.__class__(**{**spec.__dict__, "version": "v3.0.1"}))
    images.inputs_hash.cache_clear()
    try:
        assert images.inputs_hash("registry") != before[0] and images.inputs_hash("node") == before[1]
    finally:
        images.inputs_hash.cache_clear()


def test_tags_name_the_version_and_what_users_run_carries_its_hash():
    assert images.reference("kube-apiserver") == f"kindlab.local/kube-apiserver:{toolchain.KUBE_VERSION}"
    assert images.reference("etcd") == f"kindlab.local/etcd:{toolchain.ETCD_VERSION}"
    node = images.reference("node")
    assert node == f"kindlab.local/node:{toolchain.KUBE_VERSION}-{images.inputs_hash('node')[:12]}"
    assert images.is_kindlab_node(node) and not images.is_kindlab_node("kindest/node:v1.33.1")


def test_build_order_puts_what_an_image_needs_first():
    order = images.closure(["node"])
    assert order.index("debian") < order.index("kube-proxy") < order.index("node")
    assert set(images.CATALOG["node"].preload) < set(order)
    assert images.closure(["registry"]) == ["registry"]


def all_current():
    return Engine({images.reference(n): images.inputs_hash(n) for n in images.CATALOG})


def checks(steps, sh):
    return {s.name: s.check(Ctx(sh)) for s in steps if s.name != "images: Docker engine answers"}


def test_a_rerun_with_everything_built_changes_nothing_and_builds_no_binary(tmp_path):
    results = checks(images.build_steps(Lab(bin_dir=tmp_path), images.user_images()), all_current())
    assert results and all(r.state == "ok" for r in results.values())
    binaries = [r.detail for name, r in results.items() if name.startswith("binary ")]
    assert binaries and all(d.startswith("not needed") for d in binaries)


def test_only_the_outdated_image_and_its_own_binaries_are_built(tmp_path):
    engine = all_current()
    engine.present[images.reference("registry")] = "older inputs"
    results = checks(images.build_steps(Lab(bin_dir=tmp_path), images.user_images()), engine)
    changing = sorted(name for name, r in results.items() if r.state == "changed")
    assert changing == [f"binary registry {toolchain.REGISTRY_VERSION}", "image registry"]


def test_a_missing_node_image_needs_its_parts_but_not_images_nobody_asked_for(tmp_path):
    engine = Engine({})
    results = checks(images.build_steps(Lab(bin_dir=tmp_path), ["node"]), engine)
    assert results["image node"].state == "changed" and results["image debian"].state == "changed"
    assert results["image kube-apiserver"].state == "changed"
    assert "image nginx" not in results and "image registry" not in results


def test_the_ray_image_carries_the_ray_the_project_pins_and_the_values_name_it():
    """The Jobs client (pyproject.toml) and the cluster's Ray must be one version; the image follows the pin."""
    import re
    from pathlib import Path

    from playbooks.core import kyaml

    root = Path(__file__).resolve().parents[2]
    pinned = re.search(r'"ray\[default\]==([^"]+)"', (root / "pyproject.toml").read_text()).group(1)
    assert images.RAY_VERSION == pinned
    assert images.reference("ray").startswith(f"kindlab.local/ray:{pinned}-")
    values = kyaml.load((root / "helm-values" / "ray-cluster.yaml").read_text())
    assert values["image"]["tag"] == f"{pinned}-py311"  # bookworm's Python, what the image is built on


MONITORING_SOURCES = source_folders().get("monitoring")


def with_go(monkeypatch, name, **changes):
    """COMPONENTS[name] built another way (its GoBuild with `changes`), for one test."""
    spec = toolchain.COMPONENTS[name]
    go = spec.go.__class__(**{**spec.go.__dict__, **changes})
    monkeypatch.setitem(toolchain.COMPONENTS, name, spec.__class__(**{**spec.__dict__, "go": go}))
    images.inputs_hash.cache_clear()


def test_the_prometheus_image_changes_with_its_web_ui_build_and_no_other_image_does(monkeypatch):
    before = {name: images.inputs_hash(name) for name in images.CATALOG}
    assets = toolchain.COMPONENTS["prometheus"].go.assets
    try:
        for changes in ({"assets": None}, {"assets": assets.__class__(**{**assets.__dict__, "builds": assets.builds[1:]})},
                        {"tags": ("netgo",)}):
            with_go(monkeypatch, "prometheus", **changes)
            after = {name: images.inputs_hash(name) for name in images.CATALOG}
            assert [n for n in images.CATALOG if before[n] != after[n]] == ["prometheus"], changes
    finally:
        images.inputs_hash.cache_clear()


def test_the_archive_built_images_run_what_the_chart_expects():
    ksm, certgen = images.CATALOG["kube-state-metrics"], images.CATALOG["kube-webhook-certgen"]
    # the chart passes arguments only: the upstream images' entrypoints and users
    assert ksm.entrypoint == ("/kube-state-metrics", "--port=8080", "--telemetry-port=8081")
    assert ksm.user == images.NOBODY and certgen.user == "65532:65532"
    assert certgen.entrypoint == ("/kube-webhook-certgen",)
    assert images.reference("kube-state-metrics").startswith(f"kindlab.local/kube-state-metrics:"
                                                             f"{toolchain.KUBE_STATE_METRICS_VERSION}-")


def test_images_whose_source_archives_are_missing_are_skipped_with_the_reason_and_the_rest_build(tmp_path):
    steps = images.build_steps(Lab(bin_dir=tmp_path), images.user_images())
    names = [s.name for s in steps]
    assert not [n for n in names if n.startswith(("binary kube-state-metrics", "binary kube-webhook-certgen"))]
    results = checks(steps, Engine({}))
    for image, archive in (("kube-state-metrics", "kube-state-metrics-2.17.0.tar.gz"),
                           ("kube-webhook-certgen", "kube-webhook-certgen-1.6.5.tar.gz")):
        result = results[f"image {image}"]
        assert result.state == SKIPPED, result
        assert result.detail.startswith(f"{image} not built: ") and archive in result.detail
        assert "kindlab.sources.monitoring names no folder" in result.detail  # and the fix
    assert results["image prometheus"].state == CHANGED and results["image node"].state == CHANGED
    # a folder without the archive says so too
    results = checks(images.build_steps(Lab(bin_dir=tmp_path, sources=(("monitoring", str(tmp_path)),)),
                                        ["kube-state-metrics"]), Engine({}))
    assert f"kube-state-metrics-2.17.0.tar.gz is not in {tmp_path}" in results["image kube-state-metrics"].detail


@pytest.mark.skipif(not MONITORING_SOURCES, reason="the monitoring source archives are not beside this "
                    "checkout (or set INVOKE_KINDLAB_SOURCES_MONITORING)")
def test_with_the_monitoring_sources_their_images_get_binaries_built_from_the_archives(tmp_path):
    lab = Lab(bin_dir=tmp_path, sources=(("monitoring", MONITORING_SOURCES),))
    results = checks(images.build_steps(lab, ["kube-state-metrics", "kube-webhook-certgen"]), Engine({}))
    assert results[f"binary kube-state-metrics {toolchain.KUBE_STATE_METRICS_VERSION}"].state == CHANGED
    assert results[f"binary kube-webhook-certgen {toolchain.KUBE_WEBHOOK_CERTGEN_VERSION}"].state == CHANGED
    assert results["image kube-state-metrics"].state == CHANGED


@pytest.mark.skipif(os.name == "nt", reason="a shell script stands in for the binary")
def test_a_binary_of_the_pinned_version_built_before_its_ui_is_built_again_for_its_image(tmp_path, monkeypatch):
    """The Prometheus an earlier kindlab built (v3.7.3 too, without the UI) does not go into the new image."""
    where = toolchain.component_dir(tmp_path)
    where.mkdir(parents=True)
    binary = where / "prometheus"
    binary.write_text("#!/bin/sh\necho 'prometheus, version 3.7.3 (branch: , revision: unknown)'\n")
    binary.chmod(0o755)
    engine = all_current()
    engine.present[images.reference("prometheus")] = "older inputs"
    step = f"binary prometheus {toolchain.PROMETHEUS_VERSION}"
    result = checks(images.build_steps(Lab(bin_dir=tmp_path), ["prometheus"]), engine)[step]
    assert result.state == CHANGED and "(found v3.7.3, built differently)" in result.detail
    (where / "prometheus.build").write_text(toolchain.build_fingerprint("prometheus") + "\n")
    assert checks(images.build_steps(Lab(bin_dir=tmp_path), ["prometheus"]), engine)[step].state == "ok"

"""The tool installer, without building anything: a fake `go` stands in for Go."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from playbooks import toolchain
from playbooks.toolchain import ToolInstallError

# What the real binaries printed on linux/amd64 (built by this installer).
REAL_VERSION_OUTPUTS = {
    "kind": ("kind v0.29.0 go1.26.8 linux/amd64\n", "v0.29.0"),
    "kubectl": ("Client Version: v1.33.13\nKustomize Version: v5.6.0\n", "v1.33.13"),
    "helm": ("v3.22.0\n", "v3.22.0"),
    "helm-long": (
        'version.BuildInfo{Version:"v3.22.0", GitCommit:"", GitTreeState:"clean", GoVersion:"go1.26.8"}\n',
        "v3.22.0",
    ),
    "kwok": ("kwok version v0.8.0 go1.26.8 (linux/amd64)\n", "v0.8.0"),
    "kwokctl": ("kwokctl version v0.8.0 go1.26.8 (linux/amd64)\n", "v0.8.0"),
    "etcd": (
        "etcd Version: 3.5.35\nGit SHA: Not provided (use ./build instead of go build)\n"
        "Go Version: go1.26.8\nGo OS/Arch: linux/amd64\n",
        "v3.5.35",
    ),
    "kube-apiserver": ("Kubernetes v1.33.13\n", "v1.33.13"),
    "faas-cli": ("0.18.11\n", "v0.18.11"),
}

posix_only = pytest.mark.skipif(os.name == "nt", reason="the fake go and tools are shebang scripts")


@pytest.mark.parametrize("sample", sorted(REAL_VERSION_OUTPUTS))
def test_parse_version_reads_each_tools_real_output(sample):
    output, expected = REAL_VERSION_OUTPUTS[sample]
    assert toolchain.parse_version(output) == expected


@pytest.mark.parametrize("output", ["", "go1.26.8 linux/amd64", "error: unknown flag: --client", "1.33"])
def test_parse_version_finds_nothing_in_output_without_a_version(output):
    assert toolchain.parse_version(output) is None


def test_an_unstamped_kubernetes_build_does_not_pass_for_the_pinned_one():
    # Kubernetes' default gitVersion, what a build without -ldflags -X reports.
    assert toolchain.parse_version("Kubernetes v0.0.0-master+$Format:%H$") == "v0.0.0-master"


def test_every_tool_the_lab_and_testbed_use_is_pinned_once():
    assert set(toolchain.LAB_TOOLS) | set(toolchain.TESTBED_TOOLS) == set(toolchain.TOOLS)
    for name, spec in toolchain.TOOLS.items():
        assert spec.name == name
        assert re.fullmatch(r"v\d+\.\d+\.\d+", spec.version), name


def test_kubectl_and_control_plane_share_one_kubernetes_version():
    kube_tools = ("kubectl", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
    versions = {toolchain.TOOLS[n].version for n in kube_tools}
    assert versions == {toolchain.KUBE_VERSION}


def _required(go_mod: Path, module: str) -> str:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (\S+)", go_mod.read_text(), re.MULTILINE)
    assert match, f"{go_mod} does not require {module}"
    return match.group(1)


def test_wrapper_modules_pin_the_versions_the_tool_table_stamps():
    tools = toolchain.TOOLS_DIR
    kube_minor_series = "v0." + toolchain.KUBE_VERSION.split(".", 1)[1]  # v1.33.13 -> v0.33.13
    assert _required(tools / "kubectl" / "go.mod", "k8s.io/kubectl") == kube_minor_series
    assert _required(tools / "kube-control-plane" / "go.mod", "k8s.io/kubernetes") == toolchain.KUBE_VERSION
    assert _required(tools / "etcd" / "go.mod", "go.etcd.io/etcd/server/v3") == toolchain.ETCD_VERSION
    control_plane = (tools / "kube-control-plane" / "go.mod").read_text()
    for staging in ("k8s.io/api", "k8s.io/apiserver", "k8s.io/client-go", "k8s.io/kube-scheduler"):
        assert f"{staging} => {staging} {kube_minor_series}" in control_plane
    for spec in toolchain.TOOLS.values():
        if spec.go.wrapper:
            assert (tools / spec.go.wrapper / "go.sum").is_file(), spec.name


def test_exe_name_adds_exe_only_on_windows(monkeypatch):
    monkeypatch.setattr(toolchain, "_on_windows", lambda: False)
    assert toolchain.exe_name("kubectl") == "kubectl"
    monkeypatch.setattr(toolchain, "_on_windows", lambda: True)
    assert toolchain.exe_name("kubectl") == "kubectl.exe"


def test_default_bin_dir_honours_the_environment_override(monkeypatch, tmp_path):
    monkeypatch.setenv("KINDLAB_BIN_DIR", str(tmp_path / "tools"))
    assert toolchain.default_bin_dir() == tmp_path / "tools"
    monkeypatch.setenv("KINDLAB_BIN_DIR", "~/lab-bin")
    assert toolchain.default_bin_dir() == Path.home() / "lab-bin"


def test_default_bin_dir_is_a_per_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("KINDLAB_BIN_DIR", raising=False)
    from playbooks.core import settings
    monkeypatch.setattr(settings, "_on_windows", lambda: False)
    assert toolchain.default_bin_dir() == Path.home() / ".cache" / "kindlab" / "bin"
    monkeypatch.setattr(settings, "_on_windows", lambda: True)
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path))
    assert toolchain.default_bin_dir() == tmp_path / "kindlab" / "bin"


# ---------------------------------------------------------------- fake go

FAKE_GO = textwrap.dedent(
    """\
    #!{python}
    # Records how it was called, then behaves like `go build`/`go install`.
    import json, os, sys
    args = sys.argv[1:]
    go_mod = os.path.join(os.getcwd(), "go.mod")

    def replaced_sources(path):
        # the files of the directories go.mod's `replace` lines point at, as the build sees them
        found = {{}}
        lines = open(path).read().splitlines() if os.path.exists(path) else []
        for line in lines:
            if line.startswith("replace ") and "=>" in line:
                root = line.split("=>", 1)[1].strip()
                for folder, _, names in os.walk(root):
                    for name in names:
                        full = os.path.join(folder, name)
                        # bytes that are not UTF-8 (gzipped assets) survive as surrogates
                        found[os.path.relpath(full, root)] = open(full, newline="", errors="surrogateescape").read()
        return found

    with open(os.environ["FAKE_GO_RECORD"], "a") as record:
        record.write(json.dumps({{"argv": sys.argv, "cwd": os.getcwd(),
                                 "GOBIN": os.environ.get("GOBIN"),
                                 "CGO_ENABLED": os.environ.get("CGO_ENABLED"),
                                 "go.mod": open(go_mod).read() if os.path.exists(go_mod) else None,
                                 "replaced": replaced_sources(go_mod)}}) + "\\n")
    if args[:2] == ["mod", "download"]:
        sys.exit(0)
    if args[:1] == ["list"]:  # `go list -m -f ... MODULE`: where the module's source is
        print(os.environ["FAKE_MODULE_DIR"])
        sys.exit(0)
    if os.environ.get("FAKE_GO_FAIL"):
        print("go: downloading example.com/dep v1.0.0")
        print(os.environ["FAKE_GO_FAIL"])
        sys.exit(1)
    if "-o" in args:
        out = args[args.index("-o") + 1]
    else:
        package = args[-1].split("@")[0]
        out = os.path.join(os.environ["GOBIN"], package.rsplit("/", 1)[-1])
    with open(out, "w") as tool:
        tool.write("#!{python}\\nprint(%r)\\n" % os.environ["FAKE_TOOL_PRINTS"])
    os.chmod(out, 0o755)
    """
)


@pytest.fixture
def fake_go(tmp_path, monkeypatch):
    """A `go` on PATH that records each call; returns a reader of those calls."""
    go_dir = tmp_path / "fake-go"
    go_dir.mkdir()
    go = go_dir / "go"
    go.write_text(FAKE_GO.format(python=sys.executable))
    go.chmod(go.stat().st_mode | stat.S_IEXEC)
    record = tmp_path / "go-calls.jsonl"
    monkeypatch.setenv("PATH", str(go_dir) + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setenv("FAKE_GO_RECORD", str(record))
    monkeypatch.delenv("FAKE_GO_FAIL", raising=False)

    def calls():
        if not record.exists():
            return []
        return [json.loads(line) for line in record.read_text().splitlines()]

    return calls


def _leftovers(bin_dir: Path) -> list[str]:
    return sorted(p.name for p in bin_dir.iterdir() if p.name.startswith("."))


@posix_only
def test_install_runs_go_install_with_the_pinned_module_version(fake_go, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_TOOL_PRINTS", "kind v0.29.0 go1.26.8 linux/amd64")
    bin_dir = tmp_path / "bin"
    messages = []

    toolchain.install("kind", bin_dir, source="go", log=messages.append)

    (call,) = fake_go()
    argv = call["argv"]
    assert isinstance(argv, list)
    assert argv[1] == "install"
    assert argv[-1] == "sigs.k8s.io/kind@v0.29.0"
    assert "-trimpath" in argv
    assert argv[argv.index("-ldflags") + 1].startswith("-s -w")
    assert call["CGO_ENABLED"] == "0"
    # Built into a folder beside the final binary, so the last move is a rename.
    assert Path(call["GOBIN"]).parent == bin_dir
    assert toolchain.installed_version("kind", bin_dir) == "v0.29.0"
    assert _leftovers(bin_dir) == []
    assert any("installed v0.29.0" in m for m in messages)


@posix_only
def test_install_stamps_the_kubernetes_version_into_the_control_plane(fake_go, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_TOOL_PRINTS", "Kubernetes v1.33.13")
    bin_dir = tmp_path / "bin"

    toolchain.install("kube-apiserver", bin_dir, source="go", log=lambda _: None)

    (call,) = fake_go()
    argv = call["argv"]
    assert argv[1] == "build"
    assert argv[-1] == "k8s.io/kubernetes/cmd/kube-apiserver"
    assert Path(call["cwd"]) == toolchain.TOOLS_DIR / "kube-control-plane"
    assert Path(argv[argv.index("-o") + 1]).parent.parent == bin_dir
    ldflags = argv[argv.index("-ldflags") + 1]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion=v1.33.13" in ldflags
        assert f"-X {package}.gitMajor=1" in ldflags
        assert f"-X {package}.gitMinor=33" in ldflags
    assert toolchain.installed_version("kube-apiserver", bin_dir) == "v1.33.13"


@posix_only
def test_install_stamps_helm_version_and_kubernetes_capabilities(fake_go, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_TOOL_PRINTS", "v3.22.0")
    toolchain.install("helm", tmp_path / "bin", source="go", log=lambda _: None)
    argv = fake_go()[0]["argv"]
    ldflags = argv[argv.index("-ldflags") + 1]
    assert "-X helm.sh/helm/v3/internal/version.version=v3.22.0" in ldflags
    assert "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=33" in ldflags
    assert argv[-1] == "helm.sh/helm/v3/cmd/helm@v3.22.0"


FAKE_NPM = textwrap.dedent(
    """\
    #!{python}
    # Records how it was called; `npm run build -w` of the UI's app leaves what vite leaves.
    import json, os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_NPM_RECORD"], "a") as record:
        record.write(json.dumps({{"args": args, "cwd": os.getcwd()}}) + "\\n")
    if args[:4] == ["run", "build", "-w", "@prometheus-io/mantine-ui"]:
        os.makedirs("mantine-ui/dist/assets")
        open("mantine-ui/dist/index.html", "w").write("<title>TITLE_PLACEHOLDER</title>")
        open("mantine-ui/dist/assets/index-1a2b.js", "w").write("console.log('ui')")
    """
)

EMBED_TEMPLATE = "//go:build builtinassets\n\npackage ui\n\nimport \"embed\"\n"


@pytest.fixture
def fake_prometheus_module(fake_go, tmp_path, monkeypatch):
    """A Prometheus module (its plugin list and web UI's source, read-only as in the module cache),
    a fake `npm`, and a reader of npm's calls."""
    module = tmp_path / "modcache" / "prometheus@v0.307.3"
    (module / "plugins").mkdir(parents=True)
    (module / "plugins" / "plugins.go").write_text("package plugins // every service discovery\n")
    ui = module / "web" / "ui"
    ui.mkdir(parents=True)
    (ui / "package.json").write_text('{"workspaces": ["mantine-ui", "module/*"]}')
    (ui / "embed.go.tmpl").write_text(EMBED_TEMPLATE)
    for folder in (module / "plugins", ui, ui.parent):
        folder.chmod(0o555)  # as the module cache keeps it
    npm = tmp_path / "fake-go" / "npm"
    npm.write_text(FAKE_NPM.format(python=sys.executable))
    npm.chmod(0o755)
    record = tmp_path / "npm-calls.jsonl"
    monkeypatch.setenv("FAKE_NPM_RECORD", str(record))
    monkeypatch.setenv("FAKE_MODULE_DIR", str(module))
    monkeypatch.setenv("FAKE_TOOL_PRINTS", "prometheus, version 3.7.3 (branch: , revision: unknown)")
    yield module, (lambda: [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else [])
    for folder in (module / "plugins", ui, ui.parent):
        folder.chmod(0o755)


@posix_only
def test_a_patched_build_compiles_a_copy_of_the_module_with_kindlabs_file_and_leaves_both_originals_alone(
        fake_go, fake_prometheus_module, tmp_path):
    """Prometheus with only Kubernetes service discovery: its generated plugin list swapped for kindlab's."""
    module, _ = fake_prometheus_module
    bin_dir = tmp_path / "bin"
    wrapper_before = (toolchain.TOOLS_DIR / "prometheus" / "go.mod").read_text()

    toolchain.install("prometheus", bin_dir, source="go", log=lambda _: None)

    download, listing, build = fake_go()
    assert download["argv"][1:] == ["mod", "download", "github.com/prometheus/prometheus"]
    assert build["argv"][1] == "build" and build["argv"][-1] == "github.com/prometheus/prometheus/cmd/prometheus"
    assert Path(build["cwd"]) != toolchain.TOOLS_DIR / "prometheus"  # a copy of the wrapper
    replace = [line for line in build["go.mod"].splitlines() if line.startswith("replace ")]
    assert len(replace) == 1 and replace[0].startswith("replace github.com/prometheus/prometheus => ")
    assert "-mod=readonly" in build["argv"]
    patched = build["replaced"]["plugins/plugins.go"]
    assert patched == (toolchain.TOOLS_DIR / "prometheus" / "_overlay" / "plugins.go").read_text()
    ldflags = build["argv"][build["argv"].index("-ldflags") + 1]
    assert "-X github.com/prometheus/common/version.Version=3.7.3" in ldflags
    # the module cache and the repository are untouched; the patched copy is gone with the staging folder
    assert (module / "plugins" / "plugins.go").read_text() == "package plugins // every service discovery\n"
    assert sorted(p.name for p in (module / "web" / "ui").iterdir()) == ["embed.go.tmpl", "package.json"]
    assert (toolchain.TOOLS_DIR / "prometheus" / "go.mod").read_text() == wrapper_before
    assert toolchain.installed_version("prometheus", bin_dir) == "v3.7.3"
    assert _leftovers(bin_dir) == []


@posix_only
def test_prometheus_embeds_its_web_ui_built_with_npm_as_upstream_does_and_a_rebuild_reuses_it(
        fake_go, fake_prometheus_module, tmp_path):
    module, npm_calls = fake_prometheus_module
    bin_dir = tmp_path / "bin"
    said = []

    toolchain.install("prometheus", bin_dir, source="go", log=said.append)

    # npm ci, then the two libraries and the app, in the copy of the module's web/ui (never the module cache)
    calls = npm_calls()
    assert [c["args"] for c in calls] == [["ci", "--no-audit", "--no-fund"],
                                          ["run", "build", "-w", "@prometheus-io/lezer-promql"],
                                          ["run", "build", "-w", "@prometheus-io/codemirror-promql"],
                                          ["run", "build", "-w", "@prometheus-io/mantine-ui"]]
    ui_copy = Path(calls[0]["cwd"])
    assert ui_copy.parts[-2:] == ("web", "ui") and module not in ui_copy.parents
    build = fake_go()[-1]
    assert build["argv"][build["argv"].index("-tags") + 1] == "netgo,builtinassets"  # upstream's .promu.yml
    # every file of the app's dist gzipped under static/mantine-ui, and embed.go naming exactly those
    source = build["replaced"]
    assert source["web/ui/embed.go"] == (EMBED_TEMPLATE + "//go:embed static/mantine-ui/assets/index-1a2b.js.gz "
                                         "static/mantine-ui/index.html.gz\nvar EmbedFS embed.FS\n")
    packed = source["web/ui/static/mantine-ui/index.html.gz"].encode("utf-8", "surrogateescape")
    assert gzip.decompress(packed) == b"<title>TITLE_PLACEHOLDER</title>"
    assert toolchain.is_built("prometheus", bin_dir)

    # the binary built again (say its patch changed): the UI is taken as it was built, npm is not run
    (bin_dir / "prometheus").unlink()
    toolchain.install("prometheus", bin_dir, source="go", log=said.append)
    assert len(npm_calls()) == 4
    again = fake_go()[-1]["replaced"]
    assert again["web/ui/embed.go"] == source["web/ui/embed.go"]
    assert again["web/ui/static/mantine-ui/index.html.gz"] == source["web/ui/static/mantine-ui/index.html.gz"]
    assert any("web UI is built already" in line for line in said)


@posix_only
def test_the_ui_build_needs_npm_and_says_so(fake_go, fake_prometheus_module, tmp_path, monkeypatch):
    (tmp_path / "fake-go" / "npm").unlink()
    monkeypatch.setenv("PATH", str(tmp_path / "fake-go"))
    with pytest.raises(ToolInstallError, match=r"prometheus: its web UI is built with npm, and `npm` is not on "
                                               r"PATH; install Node.js 20 or newer \(with npm\)"):
        toolchain.install("prometheus", tmp_path / "bin", source="go", log=lambda _: None)


@posix_only
def test_a_component_of_the_pinned_version_built_another_way_is_not_taken_as_built(
        fake_go, fake_prometheus_module, tmp_path, monkeypatch):
    """Prometheus v3.7.3 built before it carried its UI reports v3.7.3 too: its build record tells them apart."""
    bin_dir = tmp_path / "bin"
    toolchain.install("prometheus", bin_dir, source="go", log=lambda _: None)
    assert toolchain.is_built("prometheus", bin_dir)
    spec = toolchain.COMPONENTS["prometheus"]
    without_ui = spec.__class__(**{**spec.__dict__, "go": spec.go.__class__(**{**spec.go.__dict__, "assets": None})})
    monkeypatch.setitem(toolchain.COMPONENTS, "prometheus", without_ui)
    assert toolchain.is_current("prometheus", bin_dir) and not toolchain.is_built("prometheus", bin_dir)
    (bin_dir / "prometheus.build").unlink()  # built by a kindlab that kept no record
    monkeypatch.setitem(toolchain.COMPONENTS, "prometheus", spec)
    assert not toolchain.is_built("prometheus", bin_dir)


def test_kindlabs_prometheus_plugin_list_keeps_kubernetes_discovery_alone():
    spec = toolchain.COMPONENTS["prometheus"].go
    module, files = spec.patches
    ((target, replacement),) = files
    text = (toolchain.TOOLS_DIR / spec.wrapper / replacement).read_text()
    imports = re.findall(r'_ "([^"]+)"', text)
    assert imports == ["github.com/prometheus/prometheus/discovery/kubernetes"]
    assert target == "plugins/plugins.go" and module == "github.com/prometheus/prometheus"


@posix_only
def test_install_moves_the_new_binary_in_with_one_rename(fake_go, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_TOOL_PRINTS", "etcd Version: 3.5.35")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "etcd").write_text("old")
    renames = []
    real_replace = os.replace

    def recording_replace(src, dst):
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(toolchain.os, "replace", recording_replace)
    toolchain.install("etcd", bin_dir, source="go", log=lambda _: None)

    ((src, dst),) = renames
    assert dst == bin_dir / "etcd"
    assert src.parent.parent == bin_dir and src.parent.name.startswith(".etcd-")
    assert toolchain.installed_version("etcd", bin_dir) == "v3.5.35"
    assert _leftovers(bin_dir) == []


@posix_only
def test_a_failed_build_names_tool_command_and_output_and_keeps_the_old_binary(fake_go, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_GO_FAIL", "reading proxy/@v/0.18.11.info: 403 Forbidden")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "faas-cli").write_text("old")

    with pytest.raises(ToolInstallError) as raised:
        toolchain.install("faas-cli", bin_dir, source="go", log=lambda _: None)

    message = str(raised.value)
    assert message.startswith("faas-cli: ")
    assert "go install" in message and "github.com/openfaas/faas-cli@0.18.11" in message
    assert "exit code 1" in message
    assert "403 Forbidden" in message
    assert "module proxy did not serve" in message
    assert (bin_dir / "faas-cli").read_text() == "old"
    assert _leftovers(bin_dir) == []


@posix_only
def test_a_binary_reporting_the_wrong_version_is_not_installed(fake_go, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_TOOL_PRINTS", "kind v0.28.0 go1.26.8 linux/amd64")
    bin_dir = tmp_path / "bin"
    with pytest.raises(ToolInstallError, match=r"kind: the new binary reports v0\.28\.0, not v0\.29\.0"):
        toolchain.install("kind", bin_dir, source="go", log=lambda _: None)
    assert not (bin_dir / "kind").exists()
    assert _leftovers(bin_dir) == []


def test_missing_go_is_a_clear_error(monkeypatch, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(ToolInstallError, match=r"^kubectl: .*`go` is not on PATH; install Go 1\.26 or newer"):
        toolchain.install("kubectl", tmp_path / "bin", source="go", log=lambda _: None)


def test_unknown_tool_and_source_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown tool 'minikube'"):
        toolchain.install("minikube", tmp_path)
    with pytest.raises(ValueError, match="source must be"):
        toolchain.install("kind", tmp_path, source="apt")


# ---------------------------------------------------------------- version checks


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}\n")
    path.chmod(0o755)
    return path


@posix_only
def test_installed_version_is_none_for_missing_failing_or_hanging_tools(monkeypatch, tmp_path):
    assert toolchain.installed_version("kubectl", tmp_path) is None
    _script(tmp_path / "kubectl", "import sys; print('Client Version: v1.33.13'); sys.exit(1)")
    assert toolchain.installed_version("kubectl", tmp_path) is None
    monkeypatch.setattr(toolchain, "VERSION_TIMEOUT_S", 0.5)
    _script(tmp_path / "kubectl", "import time; time.sleep(5)")
    assert toolchain.installed_version("kubectl", tmp_path) is None


@posix_only
def test_installed_version_passes_the_client_only_flags(tmp_path):
    _script(
        tmp_path / "faas-cli",
        "import sys; print('0.18.11' if sys.argv[1:] == ['version', '--short-version'] else 'x')",
    )
    assert toolchain.installed_version("faas-cli", tmp_path) == "v0.18.11"
    assert toolchain.is_current("faas-cli", tmp_path)


# ---------------------------------------------------------------- release downloads
# A local HTTP server stands in for the projects' release pages: the same file
# names, the same checksum files (sha256sum lines, a lone digest, GitHub's asset
# digests), on 127.0.0.1.


@pytest.fixture
def releases(tmp_path, monkeypatch):
    """Serve tmp_path/site on 127.0.0.1; point a tool's release there. Returns (site, point_at)."""
    import functools
    import http.server
    import threading

    site = tmp_path / "site"
    site.mkdir()
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(toolchain, "GITHUB_API", f"{base}/api")
    monkeypatch.setattr(toolchain, "_UNREACHABLE", {})

    def point_at(name, checksums, base_url=base):
        spec = toolchain.TOOLS[name]
        release = toolchain.ReleaseDownload(url=base_url + "/download/{version}/" + name + "-{os}-{arch}{exe}",
                                            checksums=checksums.replace("BASE", base_url))
        monkeypatch.setitem(toolchain.TOOLS, name, toolchain.ToolSpec(
            name=spec.name, version=spec.version, version_args=spec.version_args, go=spec.go, release=release))
        return toolchain._release_fields(toolchain.TOOLS[name])["asset"]

    yield site, point_at
    server.shutdown()


def _publish(site: Path, version: str, asset: str, body: str) -> bytes:
    folder = site / "download" / version
    folder.mkdir(parents=True, exist_ok=True)
    _script(folder / asset, body)
    return (folder / asset).read_bytes()


@posix_only
def test_a_release_whose_published_checksum_matches_is_installed(releases, monkeypatch, tmp_path):
    site, point_at = releases
    asset = point_at("kind", "BASE/download/{version}/{asset}.sha256sum")
    data = _publish(site, "v0.29.0", asset, "print('kind v0.29.0 go1.24.2 linux/amd64')")
    (site / "download" / "v0.29.0" / f"{asset}.sha256sum").write_text(
        f"{hashlib.sha256(data).hexdigest()}  {asset}\n")
    monkeypatch.setenv("PATH", str(tmp_path / "no-go-here"))  # it must not need Go
    messages = []

    how = toolchain.install("kind", tmp_path / "bin", source="auto", log=messages.append)

    assert how.startswith("release download, sha256 checked against http://127.0.0.1:")
    assert toolchain.installed_version("kind", tmp_path / "bin") == "v0.29.0"
    assert _leftovers(tmp_path / "bin") == []


@posix_only
@pytest.mark.parametrize("form", ["lone digest", "github asset digest"])
def test_the_other_checksum_forms_projects_publish_are_read(releases, monkeypatch, tmp_path, form):
    site, point_at = releases
    if form == "lone digest":  # kubectl.sha256
        asset = point_at("kubectl", "BASE/download/{version}/{asset}.sha256")
    else:  # kwok and faas-cli publish no file: GitHub's digest of the asset
        asset = point_at("kubectl", "github:example/tool")
    data = _publish(site, "v1.33.13", asset, "print('Client Version: v1.33.13')")
    digest = hashlib.sha256(data).hexdigest()
    if form == "lone digest":
        (site / "download" / "v1.33.13" / f"{asset}.sha256").write_text(digest + "\n")
    else:
        api = site / "api" / "repos" / "example" / "tool" / "releases" / "tags"
        api.mkdir(parents=True)
        (api / "v1.33.13").write_text(json.dumps({"assets": [
            {"name": "other", "digest": "sha256:" + "1" * 64}, {"name": asset, "digest": f"sha256:{digest}"}]}))
    monkeypatch.setenv("PATH", str(tmp_path / "no-go-here"))
    toolchain.install("kubectl", tmp_path / "bin", source="release", log=lambda _: None)
    assert toolchain.installed_version("kubectl", tmp_path / "bin") == "v1.33.13"


@posix_only
def test_a_release_whose_checksum_does_not_match_is_refused_and_nothing_is_built(releases, fake_go, tmp_path):
    site, point_at = releases
    asset = point_at("kind", "BASE/download/{version}/{asset}.sha256sum")
    _publish(site, "v0.29.0", asset, "print('kind v0.29.0')")
    (site / "download" / "v0.29.0" / f"{asset}.sha256sum").write_text(f"{'0' * 64}  {asset}\n")
    with pytest.raises(ToolInstallError, match=r"kind: the download from .* has sha256 [0-9a-f]{64}, but "
                                               r"http://127.0.0.1:\d+/download/v0.29.0/kind-\S+ publishes 0{64}"):
        toolchain.install("kind", tmp_path / "bin", source="auto", log=lambda _: None)
    assert not (tmp_path / "bin" / "kind").exists()
    assert fake_go() == []  # a bad checksum is not a reason to fall back quietly


@posix_only
@pytest.mark.parametrize("published", ["no checksum file", "no line for this file"])
def test_a_release_without_a_published_checksum_is_refused(releases, fake_go, tmp_path, published):
    site, point_at = releases
    asset = point_at("kind", "BASE/download/{version}/{asset}.sha256sum")
    _publish(site, "v0.29.0", asset, "print('kind v0.29.0')")
    if published == "no line for this file":
        (site / "download" / "v0.29.0" / f"{asset}.sha256sum").write_text(f"{'1' * 64}  kind-plan9-mips\n")
    with pytest.raises(ToolInstallError, match=r"kind: .*(HTTP 404|publishes no sha256 for kind-)"):
        toolchain.install("kind", tmp_path / "bin", source="auto", log=lambda _: None)
    assert not (tmp_path / "bin" / "kind").exists() and fake_go() == []


@posix_only
def test_an_unreachable_release_server_falls_back_to_go_and_says_so(releases, fake_go, monkeypatch, tmp_path):
    import socket
    _, point_at = releases
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    point_at("kind", "BASE/download/{version}/{asset}.sha256sum", base_url=f"http://127.0.0.1:{port}")
    monkeypatch.setenv("FAKE_TOOL_PRINTS", "kind v0.29.0 go1.26.8 linux/amd64")
    messages = []

    how = toolchain.install("kind", tmp_path / "bin", source="auto", log=messages.append)

    assert how.startswith("built from Go source (release unreachable:")
    assert len(fake_go()) == 1
    assert any("release unreachable" in m and "building from Go source" in m for m in messages)
    assert toolchain.installed_version("kind", tmp_path / "bin") == "v0.29.0"


def _buildinfo_blob(modinfo: str) -> bytes:
    """The bytes the Go linker writes (Go 1.18+ layout): magic, 32-byte header, two varint strings."""
    header = b"\xff Go buildinf:" + bytes([8, 2]) + b"\0" * 16
    def varint_string(text):
        data = text.encode()
        return _uvarint(len(data)) + data
    return b"\x7fELF...code..." + header + varint_string("go1.26.8") + varint_string(modinfo) + b"...rest"


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_a_tool_without_a_version_flag_is_read_from_its_go_build_info(tmp_path):
    sentinel = "0" * 16
    modinfo = (sentinel + "path\tgithub.com/ray-project/kuberay/ray-operator\n"
               "mod\tgithub.com/ray-project/kuberay/ray-operator\tv1.6.2\th1:abc=\n"
               + "".join(f"dep\texample.com/m{i}\tv0.{i}.0\th1:x=\n" for i in range(20)) + sentinel)
    binary = tmp_path / "ray-operator"
    binary.write_bytes(_buildinfo_blob(modinfo))
    binary.chmod(0o755)
    assert toolchain.buildinfo_version(binary) == "v1.6.2"
    assert toolchain.installed_version("ray-operator", tmp_path) == "v1.6.2"
    binary.write_bytes(b"not a go binary")
    assert toolchain.installed_version("ray-operator", tmp_path) is None

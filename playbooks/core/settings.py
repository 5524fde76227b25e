"""Settings -> one small immutable description of the lab.

Data flows one way: the `kindlab:` section of Invoke's configuration
(invoke.yaml, ~/.invoke.yaml, INVOKE_KINDLAB_* variables, `-f FILE`) plus
task flags are read and validated here once; plays and steps receive the
resulting `Lab` and never look anything up themselves.

Every setting, its default and its bounds are written once, in SCHEMA: Invoke
gets the defaults from it (tasks.py), the Lab's fields take theirs from it,
and a value outside it is refused with one sentence (a did-you-mean for a
misspelt key) before anything runs.
"""
from __future__ import annotations

import difflib
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, Iterable, Mapping

# kind accepts cluster names that are lowercase DNS labels (its own validation
# rejects anything else only after it has started work).
_CLUSTER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# user@box[:port], box or an ssh config alias (IPv6 in brackets: user@[::1]:2222)
_HOST = re.compile(r"^(?:[A-Za-z0-9._-]+@)?(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")


class SettingsError(ValueError):
    """Bad input from the user: printed as it is, exit code 2, nothing changed."""


# --- what each provider can do ------------------------------------------------
@dataclass(frozen=True)
class Provider:
    """What a cluster provider can do; plays ask these, never the provider's name."""

    name: str
    creates_clusters: bool  # kindlab creates and deletes the cluster
    runs_containers: bool   # pods really run: HTTP checks, functions, Ray jobs
    docker_nodes: bool      # nodes are Docker containers: port mappings, image loading, the local registry
    local_operators: bool   # the charts' operators run as local processes beside the control plane
    fixed_nodes: bool       # no autoscaler adds a node: a pod that does not fit now never will


PROVIDERS = {
    "kind": Provider("kind", creates_clusters=True, runs_containers=True, docker_nodes=True, local_operators=False,
                     fixed_nodes=True),
    "kwok": Provider("kwok", creates_clusters=True, runs_containers=False, docker_nodes=False, local_operators=True,
                     fixed_nodes=True),
    "existing": Provider("existing", creates_clusters=False, runs_containers=True, docker_nodes=False,
                         local_operators=False, fixed_nodes=False),  # it may scale: wait out the timeout
}


# --- the settings, their defaults and bounds: written here once ----------------
@dataclass(frozen=True)
class Setting:
    default: Any
    kind: type  # str, int, float, bool or dict (of strings)
    low: float | None = None
    high: float | None = None
    choices: tuple = ()


MAX_REPLICAS = 100     # nginx pods: a lab on one machine
MAX_TIMEOUT_S = 86400  # a day: longer is a mistake, not a wait
PORT = (1, 65535)
SCHEMA: dict[str, Any] = {
    "provider": Setting("", str, choices=("", *PROVIDERS)),  # empty: the last cluster.create's, else kind
    "cluster": Setting("", str),          # empty: cloud-hw, or the last cluster.create's
    "context": Setting("", str),          # with provider existing
    "kubeconfig": Setting("", str),       # empty: $KUBECONFIG or ~/.kube/config
    "home": Setting("", str),             # empty: $KINDLAB_HOME or the per-user cache
    "bin_dir": Setting("", str),          # empty: $KINDLAB_BIN_DIR or the per-user cache
    "listen_address": Setting("127.0.0.1", str),
    # host ports kind maps to node ports: the cluster's own here; each part's come from its NodePorts
    "ports": {"http": Setting(8080, int, *PORT)},
    "workers": Setting(0, int, 0, 8),
    "timeout": Setting(300.0, float, 1, MAX_TIMEOUT_S),
    "kwok": {"nodes": Setting(1, int, 1, 100), "cpu": Setting("4", str), "memory": Setting("8Gi", str),
             "pods": Setting(110, int, 1, 1000), "ready_delay_ms": Setting(1000, int, 0, 600_000)},
    "offline": Setting(False, bool),
    "kind": {"node_image": Setting("", str)},
    "images": Setting({}, dict),          # part -> image instead of the part's default
    "charts": Setting({}, dict),          # release -> local chart dir or .tgz instead of its repository
    # folders of source archives no package registry serves (playbooks/sources.py)
    "sources": {"openfaas": Setting("", str), "monitoring": Setting("", str)},
    "debian_mirror": Setting(DEBIAN_MIRROR, str),
    "retries": {"attempts": Setting(5, int, 1, 20), "initial": Setting(1.0, float, 0.01, 60),
                "max": Setting(20.0, float, 0.01, 600)},
    # where the lab runs: empty for this machine, else user@box[:port] or a Host alias of the ssh config
    "host": Setting("", str),
    "ssh": {"config": Setting("", str),                # empty: ~/.ssh/config
            "accept_new_host_key": Setting(False, bool)},  # an unknown host key is refused unless this is true
}


def schema_with(parts: Iterable) -> dict:
    """SCHEMA with what the parts declare: their settings (kindlab.<part>.<key>) and the host ports of their
    node ports (kindlab.ports.<name>)."""
    schema = {key: dict(spec) if isinstance(spec, Mapping) else spec for key, spec in SCHEMA.items()}
    for part in parts:
        for port in part.node_ports:
            schema["ports"][port.name] = Setting(port.host_port, int, *PORT)
        if part.settings:
            if part.name in schema:
                raise ValueError(f"part {part.name!r} declares settings under a name kindlab's own settings use")
            schema[part.name] = dict(part.settings)
    return schema


def defaults(schema: Mapping = SCHEMA) -> dict:
    """The defaults as Invoke's configuration holds them (so INVOKE_KINDLAB_* variables map onto them)."""
    return {key: defaults(spec) if isinstance(spec, Mapping) else _copy(spec.default) for key, spec in schema.items()}


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


DEFAULTS = defaults()


def validated(config: Mapping, schema: Mapping = SCHEMA, where: str = "kindlab") -> dict:
    """The settings with defaults filled in; every problem at once as one SettingsError."""
    problems: list[str] = []
    result = _validate(config, schema, where, problems)
    if problems:
        raise SettingsError("; ".join(problems))
    return result


def _validate(config: Any, schema: Mapping, where: str, problems: list[str]) -> dict:
    if not isinstance(config, Mapping):
        problems.append(f"{where} must be a mapping of settings, got {config!r}")
        return defaults(schema)
    result = defaults(schema)
    for key, value in config.items():
        name = f"{where}.{key}"
        spec = schema.get(key)
        if spec is None:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            problems.append(f"{name} is not a setting" + (f": did you mean {where}.{close[0]}?" if close else
                                                          f" (settings here: {', '.join(schema)})"))
        elif isinstance(spec, Mapping):
            result[key] = _validate(value, spec, name, problems)
        else:
            result[key] = _value(value, spec, name, problems)
    return result


def _value(value: Any, spec: Setting, name: str, problems: list[str]) -> Any:
    if value is None:
        return _copy(spec.default)
    if spec.kind is bool:
        if not isinstance(value, bool):
            problems.append(f"{name} must be true or false, got {value!r}")
        return value
    if spec.kind is dict:
        if not isinstance(value, Mapping) or not all(isinstance(v, (str, type(None))) for v in value.values()):
            problems.append(f"{name} must map names to strings, got {value!r}")
            return {}
        return {str(k): v for k, v in value.items() if v}
    if spec.kind is str:
        if isinstance(value, (Mapping, list, bool)):
            problems.append(f"{name} must be a string, got {value!r}")
        elif spec.choices and str(value) not in spec.choices:
            problems.append(f"{name} must be one of {', '.join(c for c in spec.choices if c)}, got {value!r}")
        return str(value)
    try:
        number = _number(value, spec.kind, name)
        _within(number, spec, name)
    except SettingsError as exc:
        problems.append(str(exc))
        return spec.default
    return number


def _number(value: Any, kind: type, name: str) -> float | int:
    words = "a whole number" if kind is int else "a number"
    if isinstance(value, bool):
        raise SettingsError(f"{name} must be {words}, got {value!r}")
    try:
        number = kind(str(value).strip()) if kind is int else float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be {words}, got {value!r}") from None
    if kind is float and not math.isfinite(number):
        raise SettingsError(f"{name} must be a finite number, got {value!r}")
    return number


def _within(number: float, spec: Setting, name: str) -> None:
    if spec.low is not None and number < spec.low:
        raise SettingsError(f"{name} must be at least {spec.low:g}, got {number:g}")
    if spec.high is not None and number > spec.high:
        raise SettingsError(f"{name} must be at most {spec.high:g}, got {number:g}")


def parse_count(value: Any, what: str, high: int | None = None) -> int:
    """A non-negative whole number from a flag, at most `high`, or a SettingsError naming the limit."""
    number = _number(value, int, what)
    _within(number, Setting(0, int, 0, high), what)
    return number


def parse_seconds(value: Any, what: str = "--timeout") -> float:
    """A duration from a flag: a finite number of seconds within SCHEMA's timeout bounds."""
    seconds = _number(value, float, what)
    _within(seconds, SCHEMA["timeout"], what)
    return seconds


# --- places ---------------------------------------------------------------------
def kindlab_home() -> Path:
    """Where kindlab keeps its state (locks, the last lab, per-cluster files): outside any repo."""
    if os.environ.get("KINDLAB_HOME"):
        return Path(os.environ["KINDLAB_HOME"]).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "kindlab"
    return Path.home() / ".cache" / "kindlab"


def _on_windows() -> bool:
    return os.name == "nt"


def default_bin_dir() -> Path:
    """Where kindlab keeps its tools: $KINDLAB_BIN_DIR, else a per-user cache folder.

    Shared by every lab: KINDLAB_HOME moves state, not the tools.
    """
    override = os.environ.get("KINDLAB_BIN_DIR")
    if override:
        return Path(override).expanduser()
    if _on_windows():
        local = os.environ.get("LOCALAPPDATA")
        return (Path(local) if local else Path.home() / "AppData" / "Local") / "kindlab" / "bin"
    return Path.home() / ".cache" / "kindlab" / "bin"


def default_kubeconfig() -> Path:
    first = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return Path(first).expanduser() if first else Path.home() / ".kube" / "config"


# --- the lab --------------------------------------------------------------------
@dataclass(frozen=True)
class KwokSettings:
    nodes: int = DEFAULTS["kwok"]["nodes"]
    cpu: str = DEFAULTS["kwok"]["cpu"]
    memory: str = DEFAULTS["kwok"]["memory"]
    pods: int = DEFAULTS["kwok"]["pods"]
    ready_delay_ms: int = DEFAULTS["kwok"]["ready_delay_ms"]


@dataclass(frozen=True)
class Machine:
    """Where the lab's commands run and its cluster lives: this machine, or a host reached over SSH.

    Its paths are as that machine sees them: on a host, under its user's home (`~`, which the SSH
    connection expands there), laid out as kindlab lays them out here.
    """

    host: str            # "" for this machine
    home: PurePath       # kindlab's state there (cluster configurations, kubeconfigs, operators' files)
    bin_dir: PurePath    # kindlab's tools there
    user_home: PurePath  # that user's home (kwokctl keeps its clusters under it)

    @classmethod
    def remote(cls, host: str) -> "Machine":
        home = PurePosixPath("~")
        return cls(host, home / ".cache" / "kindlab", home / ".cache" / "kindlab" / "bin", home)


@dataclass(frozen=True)
class Lab:
    """Everything a play needs to know about the lab it works on (defaults: SCHEMA's)."""

    provider: str = "kind"
    cluster: str = "cloud-hw"
    existing_context: str = ""
    kubeconfig: Path = field(default_factory=default_kubeconfig)
    home: Path = field(default_factory=kindlab_home)
    bin_dir: Path | None = None
    listen_address: str = DEFAULTS["listen_address"]
    # kindlab.ports: name -> host port (a part's default is on its NodePort)
    ports: tuple[tuple[str, int], ...] = ()
    workers: int = DEFAULTS["workers"]
    timeout: float = DEFAULTS["timeout"]
    # the parts' own settings: part -> ((key, value), ...) (a part's defaults are on the part)
    part_settings: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    kwok: KwokSettings = KwokSettings()
    retry_attempts: int = DEFAULTS["retries"]["attempts"]
    retry_initial: float = DEFAULTS["retries"]["initial"]
    retry_max: float = DEFAULTS["retries"]["max"]
    # release -> a local chart (directory or .tgz) used instead of the chart repository,
    # for machines without access to the repositories (and for the tests' fixture charts)
    charts: tuple[tuple[str, str], ...] = ()
    # Offline: no registry is reachable; the kind nodes run kindlab's node image and
    # every part uses the images `invoke images.build` made (playbooks/images.py).
    offline: bool = DEFAULTS["offline"]
    node_image: str = DEFAULTS["kind"]["node_image"]  # kind's --image; empty: kind's default
    # part -> an image to run instead of the part's default (nginx, registry)
    images: tuple[tuple[str, str], ...] = ()
    # source archive group (openfaas, monitoring) -> the folder holding its archives
    sources: tuple[tuple[str, str], ...] = ()
    debian_mirror: str = DEFAULTS["debian_mirror"]  # where `invoke images.build` gets Debian
    host: str = ""  # where the lab runs: "" this machine, else user@box[:port] or an ssh config alias
    ssh_config: str = ""  # the ssh config file read for the host (empty: ~/.ssh/config)
    accept_new_host_key: bool = False  # add an unknown host key to known_hosts instead of refusing it
    check_mode: bool = False
    verbose: bool = False

    @property
    def context(self) -> str:
        """The context of the lab's cluster in the user's kubeconfig here (the Kubernetes client's); on a
        host, its name says which host (its API server comes through kindlab's SSH tunnel)."""
        return self.host_context + (f"@{self.host}" if self.host else "")

    @property
    def host_context(self) -> str:
        """The context's name where the cluster lives (kind's and kwokctl's own name for it)."""
        if not self.can.creates_clusters:
            return self.existing_context
        return f"{self.provider}-{self.cluster}"

    @property
    def machine(self) -> Machine:
        """Where the commands run: this machine (kindlab's home and tool cache), or the host."""
        if self.host:
            return Machine.remote(self.host)
        return Machine("", self.home, self.tools_dir, Path.home())

    @property
    def tool_kubeconfig(self) -> PurePath:
        """The kubeconfig kubectl and helm read where they run: here the user's; on a host the one kind or
        kwokctl wrote there (an existing cluster: that user's own)."""
        if not self.host:
            return self.kubeconfig
        if not self.can.creates_clusters:
            return self.machine.user_home / ".kube" / "config"
        return self.machine.home / "kubeconfigs" / f"{self.host_context}.yaml"

    def cluster_flags(self, context_flag: str = "--context") -> list[str]:
        """kubectl's (helm: --kube-context) flags naming the lab's cluster, always explicitly."""
        return ["--kubeconfig", str(self.tool_kubeconfig), context_flag, self.host_context if self.host
                else self.context]

    @property
    def can(self) -> Provider:
        """What this lab's provider can do: `lab.can.runs_containers`, ..."""
        return PROVIDERS[self.provider]

    def host_port(self, name: str, default: int) -> int:
        """kindlab.ports.<name>, else `default`."""
        return dict(self.ports).get(name, default)

    @property
    def http_port(self) -> int:
        """The cluster's own host port for the node's port 80 (an ingress)."""
        return self.host_port("http", DEFAULTS["ports"]["http"])

    def part_setting(self, part: str, key: str, default: Any = None) -> Any:
        """kindlab.<part>.<key>, else `default`."""
        return dict(dict(self.part_settings).get(part, ())).get(key, default)

    def local_chart(self, release: str) -> str | None:
        return dict(self.charts).get(release)

    def image_override(self, part: str) -> str | None:
        return dict(self.images).get(part)

    @property
    def source_folders(self) -> dict[str, str]:
        """kindlab.sources: archive group -> folder (playbooks/sources.py)."""
        return dict(self.sources)

    @property
    def tools_dir(self) -> Path:
        """The tool cache: kindlab.bin_dir, else $KINDLAB_BIN_DIR, else the per-user cache."""
        return self.bin_dir or default_bin_dir()

    def validate(self) -> "Lab":
        if self.provider not in PROVIDERS:
            raise SettingsError(
                f"unknown provider {self.provider!r}: choose one of {', '.join(PROVIDERS)}")
        if not self.can.creates_clusters and not self.existing_context:
            raise SettingsError(
                f"provider {self.provider!r} needs a kubeconfig context: pass --context NAME "
                "(see `kubectl config get-contexts`)")
        if self.host and not _HOST.fullmatch(self.host):
            raise SettingsError(f"invalid host {self.host!r}: use user@box, user@box:port, box or a Host alias "
                                "of your ssh config")
        if self.can.creates_clusters and not _CLUSTER_NAME.fullmatch(self.cluster or ""):
            raise SettingsError(
                f"invalid cluster name {self.cluster!r}: use lowercase letters, digits and '-', "
                "starting and ending with a letter or digit (e.g. cloud-hw)")
        return self


# --- the last cluster made ------------------------------------------------------
def _state_file(home: Path) -> Path:
    return home / "current-lab.json"


def remember_lab(lab: Lab) -> None:
    """Record the lab that cluster.create made, so later tasks target it by default."""
    path = _state_file(lab.home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"provider": lab.provider, "cluster": lab.cluster,
                                "context": lab.existing_context, "offline": lab.offline, "host": lab.host}))


def forget_lab(lab: Lab) -> None:
    path = _state_file(lab.home)
    current = _remembered(lab.home)
    if current and current.get("provider") == lab.provider and current.get("cluster") == lab.cluster:
        path.unlink(missing_ok=True)


def _remembered(home: Path) -> dict | None:
    try:
        return json.loads(_state_file(home).read_text())
    except (OSError, ValueError):
        return None


def _plain(value: Any) -> Any:
    """Invoke's DataProxy -> plain dicts."""
    if isinstance(value, Mapping) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    return value


def lab_from_config(config: Mapping | None, schema: Mapping = SCHEMA, **flags: Any) -> Lab:
    """Build the Lab from Invoke's `kindlab:` configuration and task flags.

    Flags left as None fall back to the configuration, then to the lab
    remembered by the last cluster.create (provider and name), then to the
    defaults. Anything out of the schema's bounds (SCHEMA and what the parts
    declare: schema_with) is a SettingsError.
    """
    cfg = validated(_plain(config or {}), schema)
    home = Path(cfg["home"]).expanduser() if cfg["home"] else kindlab_home()
    remembered = _remembered(home) or {}
    provider = flags.get("provider") or os.environ.get("KINDLAB_PROVIDER") or cfg["provider"]
    cluster = flags.get("name") or cfg["cluster"]
    context = flags.get("context") or cfg["context"]
    offline = bool(flags.get("offline") or cfg["offline"])
    host = (flags.get("host") or cfg["host"] or "").strip()
    if not provider:
        provider = remembered.get("provider") or "kind"
        if not cluster and remembered.get("provider") == provider:
            cluster = remembered.get("cluster") or ""
            context = context or remembered.get("context") or ""
            host = host or remembered.get("host") or ""  # and one made on a host lives there
    if (remembered.get("provider"), remembered.get("cluster"), remembered.get("host") or "") == \
            (provider, cluster or "cloud-hw", host or ""):
        # a cluster made offline runs kindlab's images: so do the parts installed on it, whether the
        # lab is named by the remembered record or by the configuration
        offline = offline or bool(remembered.get("offline"))
    timeout = parse_seconds(flags["timeout"]) if flags.get("timeout") is not None else cfg["timeout"]
    kw, retries = cfg["kwok"], cfg["retries"]
    lab = Lab(
        provider=provider,
        cluster=cluster or "cloud-hw",
        existing_context=context,
        kubeconfig=Path(cfg["kubeconfig"]).expanduser() if cfg["kubeconfig"] else default_kubeconfig(),
        home=home,
        bin_dir=Path(cfg["bin_dir"]).expanduser() if cfg["bin_dir"] else None,
        listen_address=cfg["listen_address"],
        ports=tuple(sorted(cfg["ports"].items())),
        workers=cfg["workers"],
        timeout=timeout,
        part_settings=tuple(sorted((key, tuple(sorted(value.items()))) for key, value in cfg.items()
                                   if key not in SCHEMA and isinstance(value, Mapping))),
        kwok=KwokSettings(nodes=kw["nodes"], cpu=kw["cpu"], memory=kw["memory"], pods=kw["pods"],
                          ready_delay_ms=kw["ready_delay_ms"]),
        retry_attempts=retries["attempts"], retry_initial=retries["initial"], retry_max=retries["max"],
        charts=tuple(sorted(cfg["charts"].items())),
        offline=offline,
        node_image=cfg["kind"]["node_image"],
        images=tuple(sorted(cfg["images"].items())),
        sources=tuple(sorted((k, v) for k, v in cfg["sources"].items() if v)),
        debian_mirror=cfg["debian_mirror"] or DEBIAN_MIRROR,
        host=host,
        ssh_config=cfg["ssh"]["config"],
        accept_new_host_key=bool(flags.get("accept_new_host_key") or cfg["ssh"]["accept_new_host_key"]),
        check_mode=bool(flags.get("check")),
        verbose=bool(flags.get("verbose")),
    )
    return lab.validate()


def check_config_files(paths: list[Path], schema: Mapping = SCHEMA) -> None:
    """Refuse a configuration file that is not YAML with a `kindlab:` mapping, before Invoke reads it
    (Invoke's own loader would stop with a long traceback)."""
    import yaml

    for path in paths:
        if not path.is_file():
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise SettingsError(f"{path}{where} is not valid YAML: {getattr(exc, 'problem', None) or exc}") \
                from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"cannot read {path}: {exc}") from None
        if data is not None and not isinstance(data, Mapping):
            raise SettingsError(f"{path} must hold a mapping of settings (e.g. `kindlab: {{...}}`), "
                                f"not a {type(data).__name__}")
        if isinstance(data, Mapping) and data.get("kindlab") is not None:
            validated(data["kindlab"], schema, where=f"{path.name}: kindlab")


__all__ = ["Lab", "Machine", "KwokSettings", "Provider", "PROVIDERS", "SCHEMA", "DEFAULTS", "SettingsError", "Setting",
           "schema_with",
           "lab_from_config", "parse_count", "parse_seconds", "remember_lab", "forget_lab", "kindlab_home",
           "default_bin_dir", "check_config_files", "MAX_REPLICAS"]

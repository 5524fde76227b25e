"""Settings -> one small immutable description of the lab.

Data flows one way: invoke.yaml (and KINDLAB_* environment) plus task flags
are read here once; plays and steps receive the resulting `Lab` and never look
anything up themselves.
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

PROVIDERS = ("kind", "kwok", "existing")
# kind accepts cluster names that are lowercase DNS labels (its own validation
# rejects anything else only after it has started work).
_CLUSTER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DEBIAN_MIRROR = "http://deb.debian.org/debian"


class SettingsError(ValueError):
    """Bad input from the user: printed as it is, exit code 2, nothing changed."""


def kindlab_home() -> Path:
    """Where kindlab keeps its cache (tools, state, locks): outside any repo."""
    if os.environ.get("KINDLAB_HOME"):
        return Path(os.environ["KINDLAB_HOME"]).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "kindlab"
    return Path.home() / ".cache" / "kindlab"


def default_kubeconfig() -> Path:
    first = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return Path(first).expanduser() if first else Path.home() / ".kube" / "config"


@dataclass(frozen=True)
class KwokSettings:
    nodes: int = 1
    cpu: str = "4"
    memory: str = "8Gi"
    pods: int = 110
    ready_delay_ms: int = 1000


@dataclass(frozen=True)
class Lab:
    """Everything a play needs to know about the lab it works on."""

    provider: str = "kind"
    cluster: str = "cloud-hw"
    existing_context: str = ""
    kubeconfig: Path = field(default_factory=default_kubeconfig)
    home: Path = field(default_factory=kindlab_home)
    bin_dir: Path | None = None
    listen_address: str = "127.0.0.1"
    nginx_port: int = 30080
    http_port: int = 8080
    gateway_port: int = 31112
    workers: int = 0
    timeout: float = 300.0
    nginx_image: str = "nginx:1.27.5"
    replicas: int = 3
    kwok: KwokSettings = KwokSettings()
    retry_attempts: int = 5
    retry_initial: float = 1.0
    retry_max: float = 20.0
    # part -> a local chart (directory or .tgz) used instead of the chart repository,
    # for machines without access to the repositories (and for the tests' fixture charts)
    charts: tuple[tuple[str, str], ...] = ()
    # Offline: no registry is reachable; the kind nodes run kindlab's node image and
    # every part uses the images `invoke images.build` made (playbooks/images.py).
    offline: bool = False
    node_image: str = ""  # kind's --image; empty: kind's default (offline: kindlab's node image)
    # part -> an image to run instead of the part's default (nginx, registry)
    images: tuple[tuple[str, str], ...] = ()
    debian_mirror: str = DEBIAN_MIRROR  # where `invoke images.build` gets Debian
    host: str = ""
    check_mode: bool = False
    verbose: bool = False

    @property
    def context(self) -> str:
        """The kubeconfig context every command targets, always explicitly."""
        if self.provider == "existing":
            return self.existing_context
        return f"{self.provider}-{self.cluster}"

    def local_chart(self, part: str) -> str | None:
        return dict(self.charts).get(part)

    def image_override(self, part: str) -> str | None:
        return dict(self.images).get(part)

    @property
    def tools_dir(self) -> Path:
        """The tool cache: kindlab.bin_dir, else $KINDLAB_BIN_DIR, else the per-user cache.

        Shared by every lab: KINDLAB_HOME moves state (locks, the last lab), not the tools.
        """
        from ..toolchain import default_bin_dir  # one definition of the cache's place
        return self.bin_dir or default_bin_dir()

    def validate(self) -> "Lab":
        if self.provider not in PROVIDERS:
            raise SettingsError(
                f"unknown provider {self.provider!r}: choose one of {', '.join(PROVIDERS)}")
        if self.provider == "existing" and not self.existing_context:
            raise SettingsError(
                "provider 'existing' needs a kubeconfig context: pass --context NAME "
                "(see `kubectl config get-contexts`)")
        if self.provider != "existing" and not _CLUSTER_NAME.fullmatch(self.cluster or ""):
            raise SettingsError(
                f"invalid cluster name {self.cluster!r}: use lowercase letters, digits and '-', "
                "starting and ending with a letter or digit (e.g. cloud-hw)")
        for label, port in (("nginx port", self.nginx_port), ("http port", self.http_port),
                            ("gateway port", self.gateway_port)):
            if not 1 <= port <= 65535:
                raise SettingsError(f"{label} {port} is not a TCP port (1-65535)")
        if self.workers < 0:
            raise SettingsError(f"workers must be 0 or more, got {self.workers}")
        if self.kwok.nodes < 1:
            raise SettingsError(f"kwok nodes must be 1 or more, got {self.kwok.nodes}")
        return self


def parse_count(value: Any, what: str) -> int:
    """A non-negative whole number from a flag, or a SettingsError naming it."""
    try:
        number = int(str(value).strip())
    except ValueError:
        raise SettingsError(f"{what} must be a whole number, got {value!r}") from None
    if number < 0:
        raise SettingsError(f"{what} must be 0 or more, got {number}")
    return number


def _seconds(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"--timeout must be a number of seconds, got {value!r}") from None
    if seconds <= 0:
        raise SettingsError(f"--timeout must be more than 0 seconds, got {value!r}")
    return seconds


def _state_file(home: Path) -> Path:
    return home / "current-lab.json"


def remember_lab(lab: Lab) -> None:
    """Record the lab that cluster.create made, so later tasks target it by default."""
    path = _state_file(lab.home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"provider": lab.provider, "cluster": lab.cluster,
                                "context": lab.existing_context, "offline": lab.offline}))


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


def lab_from_config(config: Mapping | None, **flags: Any) -> Lab:
    """Build the Lab from invoke config (`kindlab:` section) and task flags.

    Flags left as None fall back to config, then to the lab remembered by the
    last cluster.create (provider and name), then to the defaults.
    """
    cfg = _plain(config or {})
    home = Path(cfg["home"]).expanduser() if cfg.get("home") else kindlab_home()
    remembered = _remembered(home) or {}
    provider = flags.get("provider") or os.environ.get("KINDLAB_PROVIDER") or cfg.get("provider") or ""
    cluster = flags.get("name") or cfg.get("cluster") or ""
    context = flags.get("context") or cfg.get("context") or ""
    offline = bool(flags.get("offline") or cfg.get("offline"))
    if not provider:
        provider = remembered.get("provider") or "kind"
        if not cluster and remembered.get("provider") == provider:
            cluster = remembered.get("cluster") or ""
            context = context or remembered.get("context") or ""
            # a cluster made offline runs kindlab's images: so do the parts installed on it
            offline = offline or bool(remembered.get("offline"))
    kw = cfg.get("kwok") or {}
    ports = cfg.get("ports") or {}
    retries = cfg.get("retries") or {}
    nginx = cfg.get("nginx") or {}
    kind = cfg.get("kind") or {}
    kubeconfig = flags.get("kubeconfig") or cfg.get("kubeconfig")
    bin_dir = cfg.get("bin_dir")
    lab = Lab(
        provider=provider,
        cluster=cluster or "cloud-hw",
        existing_context=context,
        kubeconfig=Path(kubeconfig).expanduser() if kubeconfig else default_kubeconfig(),
        home=home,
        bin_dir=Path(bin_dir).expanduser() if bin_dir else None,
        listen_address=str(cfg.get("listen_address", "127.0.0.1")),
        nginx_port=int(ports.get("nginx", 30080)),
        http_port=int(ports.get("http", 8080)),
        gateway_port=int(ports.get("gateway", 31112)),
        workers=int(cfg.get("workers", 0)),
        timeout=_seconds(flags.get("timeout") or cfg.get("timeout", 300)),
        nginx_image=str(nginx.get("image", "nginx:1.27.5")),
        replicas=int(nginx.get("replicas", 3)),
        kwok=KwokSettings(
            nodes=int(kw.get("nodes", 1)), cpu=str(kw.get("cpu", "4")),
            memory=str(kw.get("memory", "8Gi")), pods=int(kw.get("pods", 110)),
            ready_delay_ms=int(kw.get("ready_delay_ms", 1000))),
        retry_attempts=int(retries.get("attempts", 5)),
        retry_initial=float(retries.get("initial", 1.0)),
        retry_max=float(retries.get("max", 20.0)),
        charts=tuple(sorted((str(k), str(v)) for k, v in (cfg.get("charts") or {}).items() if v)),
        offline=offline,
        node_image=str(kind.get("node_image") or ""),
        images=tuple(sorted((str(k), str(v)) for k, v in (cfg.get("images") or {}).items() if v)),
        debian_mirror=str(cfg.get("debian_mirror") or DEBIAN_MIRROR),
        host=flags.get("host") or "",
        check_mode=bool(flags.get("check")),
        verbose=bool(flags.get("verbose")),
    )
    return lab.validate()


__all__ = ["Lab", "KwokSettings", "SettingsError", "lab_from_config", "parse_count",
           "remember_lab", "forget_lab", "kindlab_home"]

"""YAML read the way Kubernetes reads it.

PyYAML implements YAML 1.1, whose implicit types Kubernetes' own reader
(sigs.k8s.io/yaml) does not have: `=` is the "value" type (PyYAML's safe
loader cannot even construct it: kube-prometheus-stack's CRDs list `- =` in
an enum), `2024-01-01` becomes a date (which JSON cannot carry) and `1:20` a
base-60 number. Here those stay the strings Kubernetes sees. Every document
kindlab reads from a tool (`helm show crds`, `helm template`, kubeconfigs,
values files, manifests) goes through `load` / `load_all`.
"""
from __future__ import annotations

import re
from typing import Any, Iterator

import yaml

_DROPPED = {"tag:yaml.org,2002:value", "tag:yaml.org,2002:timestamp"}
# PyYAML's int and float patterns without their base-60 alternatives; `1e5` is a
# number, as Go reads it.
_INT = re.compile(r"""^(?:[-+]?0b[0-1_]+
                    |[-+]?0[0-7_]+
                    |[-+]?(?:0|[1-9][0-9_]*)
                    |[-+]?0x[0-9a-fA-F_]+)$""", re.X)
_FLOAT = re.compile(r"""^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)
                    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)


# libyaml's parser when PyYAML has it: eight times faster on the 4.4 MB of
# kube-prometheus-stack's CRDs, which every `monitoring.install` reads.
_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class KubeLoader(_BASE):
    """A safe loader without the YAML 1.1 types Kubernetes does not read."""


KubeLoader.yaml_implicit_resolvers = {}
for _first, _resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items():
    _kept = [(tag, regexp) for tag, regexp in _resolvers
             if tag not in _DROPPED and tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    if _kept:
        KubeLoader.yaml_implicit_resolvers[_first] = _kept
KubeLoader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
KubeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
# An explicit `!!value` or `!!timestamp` tag is read as the plain string it is.
KubeLoader.add_constructor("tag:yaml.org,2002:value", yaml.SafeLoader.construct_yaml_str)
KubeLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


def load(text: str) -> Any:
    return yaml.load(text, Loader=KubeLoader)  # noqa: S506 (a SafeLoader)


def load_all(text: str) -> Iterator[Any]:
    return yaml.load_all(text, Loader=KubeLoader)  # noqa: S506 (a SafeLoader)


def objects(text: str) -> list[dict]:
    """The Kubernetes objects of a multi-document text (empty documents and comments dropped)."""
    return [d for d in load_all(text) if isinstance(d, dict) and d.get("kind")]


__all__ = ["load", "load_all", "objects", "KubeLoader"]

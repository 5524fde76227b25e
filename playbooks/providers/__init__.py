"""The cluster providers, one module each, behind one interface (base.Provider).

kind (real nodes in Docker), kwok (a real control plane with simulated nodes)
and existing (any kubeconfig context). `of(lab)` is the one place that reads
a lab's provider by name; everything else asks the object it returns.
"""
from __future__ import annotations

from ..core.settings import Lab
from .base import LOCAL_REGISTRY, Finding, Provider
from .existing import ExistingProvider
from .kind import KindProvider
from .kwok import KwokProvider

_BY_NAME = {"kind": KindProvider, "kwok": KwokProvider, "existing": ExistingProvider}


def of(lab: Lab) -> Provider:
    """The provider of the lab's cluster."""
    return _BY_NAME[lab.provider](lab)


__all__ = ["of", "LOCAL_REGISTRY", "Provider", "Finding", "KindProvider", "KwokProvider", "ExistingProvider"]

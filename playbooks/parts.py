"""The registry of the lab's parts. `invoke all`, `status`, `down`, `doctor` and tasks.py read it.

Adding a part: a module with its steps and a `PART` record (playbooks/core/part.py),
then one line here. tasks.py then gives it `invoke NAME.install` and
`invoke NAME.uninstall`, `all` installs it, `down` removes it, `doctor` counts it.
"""
from __future__ import annotations

from .core.part import Part
from .core.settings import SettingsError
from . import faas, monitoring, nginx, ray

REGISTRY: dict[str, Part] = {part.name: part for part in (
    nginx.PART,
    monitoring.PART,
    faas.PART,
    ray.PART,
)}


def choose(only: str = "", skip: str = "", registry: dict[str, Part] | None = None) -> list[Part]:
    """The parts --only/--skip name (comma-separated), in registry order; a name it lacks is refused."""
    registry = REGISTRY if registry is None else registry

    def names(text: str) -> list[str]:
        items = [p.strip() for p in text.split(",") if p.strip()]
        unknown = [p for p in items if p not in registry]
        if unknown:
            raise SettingsError(f"unknown part(s) {', '.join(unknown)}: parts are {', '.join(registry)}")
        return items

    chosen = names(only) or list(registry)
    dropped = names(skip)
    return [registry[name] for name in chosen if name not in dropped]


__all__ = ["REGISTRY", "choose", "Part"]

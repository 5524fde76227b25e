"""existing: any cluster of the user's kubeconfig (a bigger cluster, a cloud one), named by --context.

kindlab neither makes nor deletes it: `cluster.create` checks that the context exists and its
nodes are Ready, `cluster.delete` says it is not kindlab's to delete, and `down` removes only
the lab's parts. Its nodes pull every image from the registries they reach.
"""
from __future__ import annotations

from typing import Sequence

from ..core import kubeconfig
from ..core.part import Part
from ..core.steps import Step, StepFailed, ok
from .base import Provider, nodes_ready_step


class ExistingProvider(Provider):
    def create_steps(self, parts: Sequence[Part]) -> list[Step]:
        lab = self.lab

        def check(ctx):
            if not kubeconfig.has_context(lab.kubeconfig, lab.context):
                raise StepFailed(f"context {lab.context!r} is not in {lab.kubeconfig}: "
                                 "see `kubectl config get-contexts`")
            return ok(f"using existing context {lab.context}")

        return [Step(f"context {lab.context}", check), nodes_ready_step(lab, want=1, system_pods=False)]

    def delete_steps(self) -> list[Step]:
        return [Step(f"context {self.lab.context}",
                     lambda ctx: ok("an existing cluster is not kindlab's to delete; "
                                    "use `invoke down` to remove the lab's parts"))]


__all__ = ["ExistingProvider"]

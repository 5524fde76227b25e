"""`invoke all` on the simulated cluster with the real upstream charts at their pinned versions.

Opt-in: the charts are not in this repository (their sources are public). Set
KINDLAB_REAL_CHARTS to an Invoke config file whose `kindlab.charts` names the
unpacked chart directories (monitoring, faas, kuberay-operator, ray-cluster);
README, "The simulated cluster", says how to make them.
"""
import os
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from playbooks import lab as lab_play, parts

CONFIG = os.environ.get("KINDLAB_REAL_CHARTS", "")
pytestmark = pytest.mark.skipif(not CONFIG, reason="the real upstream charts: set KINDLAB_REAL_CHARTS to a "
                                                   "config naming them (see the module docstring)")
# What the simulated cluster cannot do, and says so: nothing else may be skipped.
NO_CONTAINERS = ("runs no containers", "kind clusters", "kind only")


@pytest.fixture(scope="module")
def real_lab(testbed):
    charts = yaml.safe_load(Path(CONFIG).read_text())["kindlab"]["charts"]
    lab = replace(testbed, charts=tuple(sorted(charts.items())), timeout=300)
    yield lab
    from tests.conftest import PlayRun
    PlayRun(lab)(lab_play.down_steps(lab, parts.choose(), delete_cluster=False))


def test_all_installs_every_part_from_the_real_charts_and_reruns_unchanged(real_lab):
    from tests.conftest import PlayRun
    run = PlayRun(real_lab)
    first = run(lab_play.all_steps(real_lab, parts.choose()))
    assert not [o for o in first if o.status == "failed"], run.output
    skipped = {o.step: o.detail for o in first if o.status == "skipped"}
    assert all(any(reason in detail for reason in NO_CONTAINERS) for detail in skipped.values()), skipped
    by = {o.step: o for o in first}
    assert "2/2 pods Ready" in by["ray head and worker pods Ready"].detail  # made by the real KubeRay operator
    assert by["monitoring Prometheus and Grafana serving"].status == "ok", run.output

    again = run(lab_play.all_steps(real_lab, parts.choose()))
    assert [o.step for o in again if o.status == "changed" and not o.action] == [], run.output
    assert not [o for o in again if o.status == "failed"], run.output

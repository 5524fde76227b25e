"""The registry of parts: `all`, `down`, `status`, `doctor` and tasks.py read it, so a new part is
one module and one registry line."""
import importlib
import sys
import textwrap

import pytest

from playbooks import cluster, doctor, lab as lab_play, parts
from playbooks.core.settings import Lab, SettingsError

DUMMY_MODULE = '''
"""A part the tests add: a namespace of its own, needing nginx."""
from playbooks.core.part import Part
from playbooks.core.steps import Step, ok


def install_steps(lab, parts):
    return [Step("dummy installed", lambda ctx: ok()), Step("dummy ready", lambda ctx: ok())]


def use_steps(lab, parts):
    return [Step("dummy used", lambda ctx: ok())]


def uninstall_steps(lab, parts):
    return [Step("dummy absent", lambda ctx: ok())]


PART = Part(name="dummy", namespaces=("dummy",), install=install_steps, uninstall=uninstall_steps,
            use=use_steps, help=("Install the dummy.", "Remove the dummy."), needs=("nginx",),
            memory_mib=512, tools=("kubectl",),
            addresses=lambda lab: [("dummy", "http://127.0.0.1:1", "")])
'''


@pytest.fixture
def dummy(tmp_path, monkeypatch):
    """The one module..."""
    (tmp_path / "kindlab_dummy_part.py").write_text(textwrap.dedent(DUMMY_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("kindlab_dummy_part")
    # ...and the one registry line
    monkeypatch.setitem(parts.REGISTRY, "dummy", module.PART)
    yield module.PART
    sys.modules.pop("kindlab_dummy_part", None)


def test_a_new_part_is_installed_by_all_after_what_it_needs(dummy):
    lab = Lab(provider="kwok")
    steps = {s.name: s for s in lab_play.all_steps(lab, parts.choose())}
    cluster_ready = cluster.create_steps(lab)[-1].name
    # after the cluster and nginx's install (not after nginx's use: its verification may be skipped)
    assert steps["dummy installed"].needs == (cluster_ready, "nginx deployment and service")
    assert "dummy ready" in steps and "dummy used" in steps
    # the other parts wait for the cluster only: they install side by side
    for name in ("monitoring", "faas", "ray"):
        first = parts.REGISTRY[name].install(lab, list(parts.REGISTRY.values()))[0].name
        assert steps[first].needs == (cluster_ready,)


def test_down_removes_a_part_before_what_it_needs_and_the_rest_side_by_side(dummy):
    steps = {s.name: s for s in lab_play.down_steps(Lab(provider="kwok"), parts.choose(), False)}
    assert steps["nginx deployment and service absent"].needs == ("dummy absent",)
    assert steps["raylab release absent"].needs == ()  # nothing needs ray: it goes at once
    assert steps["monitoring release absent"].needs == ()


def test_only_skip_doctor_and_addresses_know_the_new_part(dummy, tmp_path):
    assert [p.name for p in parts.choose("dummy,nginx")] == ["dummy", "nginx"]
    assert "dummy" not in [p.name for p in parts.choose(skip="dummy")]
    lab = Lab(provider="kwok", home=tmp_path)
    memory = {f.check: f for f in doctor.findings(lab, parts.choose("dummy"))}["memory"]
    assert "need about 2560 MiB" in memory.detail  # the cluster's 2048 + the dummy's 512
    table = lab_play.addresses_table(lab, parts.choose("dummy"))
    assert table.row_count == 1


def test_tasks_py_gives_a_new_part_its_install_and_uninstall_tasks(dummy):
    import tasks
    namespace = tasks._part_namespace(dummy)
    assert set(namespace.task_names) == {"install", "uninstall"}
    assert namespace.tasks["install"].__doc__ == "Install the dummy."


def test_a_cycle_of_needs_is_refused():
    from dataclasses import replace
    a = replace(parts.REGISTRY["nginx"], name="a", needs=("b",))
    b = replace(parts.REGISTRY["nginx"], name="b", needs=("a",))
    with pytest.raises(SettingsError, match="cycle: a -> b -> a"):
        lab_play.in_order([a, b])

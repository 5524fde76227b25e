"""A part defined here, and nowhere else: what the README's "Adding a part" promises.

The part is a Deployment with a NodePort Service and an image, a setting of its own
and a host port. Nothing in playbooks/ names it: it reaches `all`, `status`, `doctor`,
`down`, the settings and the kind cluster's port mappings through the registry of parts
they are given (the registry's own, plus this one).
"""
from pathlib import Path

from playbooks import doctor, lab as lab_play, parts
from playbooks.core.cli import make_context
from playbooks.core.part import NodePort, Part
from playbooks.core.resources import absent, applied
from playbooks.core.settings import Lab, Setting, lab_from_config, schema_with
from playbooks.providers import KindProvider

from tests.unit.test_offline import Engine

NAMESPACE = "kiosk"
IMAGE = "kindlab.invalid/kiosk:1.0"  # no engine here has it: offline, the part is skipped
PORT = NodePort("kiosk", 30090, 30090, "kiosk NodePort")
SETTINGS = {"replicas": Setting(2, int, 0, 5)}


def documents(lab):
    labels = {"app": "kiosk"}
    replicas = lab.part_setting("kiosk", "replicas", SETTINGS["replicas"].default)
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "kiosk", "namespace": NAMESPACE},
         "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels},
                               "spec": {"containers": [{"name": "kiosk", "image": IMAGE}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kiosk", "namespace": NAMESPACE},
         "spec": {"type": "NodePort", "selector": labels,
                  "ports": [{"port": 80, "nodePort": PORT.node_port}]}},
    ]


def install(lab, registry):
    return [applied("kiosk namespace", lab, lambda: documents(lab)[:1]),
            applied("kiosk deployment and service", lab, lambda: documents(lab)[1:],
                    wait=lambda ctx: ctx.kube.wait_deployment(NAMESPACE, "kiosk", say=ctx.say))]


def uninstall(lab, registry):
    return [absent("kiosk absent", lab, lambda: documents(lab)[:1])]


KIOSK = Part(name="kiosk", namespaces=(NAMESPACE,), install=install, uninstall=uninstall,
            help=("Install the kiosk.", "Remove the kiosk."), memory_mib=64, tools=("kubectl",),
            images=(IMAGE,), node_ports=(PORT,), settings=SETTINGS,
            status=lambda lab, kube: [("kiosk endpoints", f"{kube.ready_endpoints(NAMESPACE, 'kiosk')} ready")])
REGISTRY = [*parts.REGISTRY.values(), KIOSK]


def test_a_part_defined_here_installs_shows_in_status_and_doctor_and_down_removes_it(play, testbed):
    lab = testbed
    outcomes = {o.step: o for o in play(lab_play.all_steps(lab, [KIOSK], REGISTRY))}
    assert outcomes["kiosk deployment and service"].status == "changed", play.output
    kube = make_context(lab).kube
    assert kube.apps.read_namespaced_deployment("kiosk", NAMESPACE).status.ready_replicas == 2  # its default

    ctx = make_context(lab)
    rows = {what: state for what, state in _rows(lab_play.status_table(lab, ctx.kube, ctx.sh, REGISTRY))}
    assert rows["pods in kiosk"] == "2/2 Ready" and rows["kiosk endpoints"] == "2 ready"

    findings = {f.check: f for f in doctor.findings(lab, [KIOSK], REGISTRY)}
    assert findings["tool kubectl"].status == "ok"
    assert "need about 2112 MiB" in findings["memory"].detail  # the cluster's 2048 and its 64

    removed = {o.step: o for o in play(lab_play.down_steps(lab, [KIOSK], False))}
    assert removed["kiosk absent"].status == "changed", play.output
    assert NAMESPACE not in {ns.metadata.name for ns in kube.core.list_namespace().items}


def test_its_setting_and_its_host_port_join_kindlabs_own(tmp_path):
    schema = schema_with(REGISTRY)
    lab = lab_from_config({"home": str(tmp_path), "kiosk": {"replicas": 3}, "ports": {"kiosk": 31090}}, schema)
    assert documents(lab)[1]["spec"]["replicas"] == 3
    mappings = {(m["containerPort"], m["hostPort"]) for m in
                KindProvider(lab).render_config(REGISTRY)["nodes"][0]["extraPortMappings"]}
    assert (30090, 31090) in mappings and (30080, 30080) in mappings  # beside nginx's


def test_offline_it_is_skipped_with_the_reason_when_its_image_is_not_here():
    lab = Lab(offline=True)
    gate = next(s for s in lab_play.all_steps(lab, [KIOSK], REGISTRY) if s.name == "kiosk images (offline)")
    result = gate.check(_Ctx(Engine({}), lab))
    assert result.state == "skipped"
    assert result.detail == (f"offline, kiosk needs image(s) {IMAGE}, not built yet: build or load {IMAGE} "
                             "into the local Docker engine")


class _Ctx:
    def __init__(self, sh, lab):
        self.sh, self.lab = sh, lab


def _rows(table):
    cells = [list(column.cells) for column in table.columns]
    return list(zip(*cells))


def test_no_file_of_the_project_names_it():
    root = Path(__file__).resolve().parents[2]
    named = [p for p in (root / "playbooks").rglob("*.py") if "kiosk" in p.read_text()] + \
            [p for p in [root / "tasks.py"] if "kiosk" in p.read_text()]
    assert named == []

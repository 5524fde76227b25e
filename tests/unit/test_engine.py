"""The Docker engine play's decisions: which capabilities --privileged would miss, what docker.start does."""
from playbooks import engine
from playbooks.core.settings import Lab
from playbooks.core.steps import StepFailed

VM_STATUS = "Name:\tpython\nCapPrm:\t000001fffeffffff\nCapBnd:\t000001fffeffffff\nCapAmb:\t0\n"
FULL_STATUS = "CapBnd:\t000001ffffffffff\n"


def test_a_bounding_set_without_cap_sys_resource_is_what_privileged_containers_trip_on():
    assert engine.missing_caps(VM_STATUS) == [24]  # CAP_SYS_RESOURCE
    assert engine.missing_caps(FULL_STATUS) == []
    assert engine.missing_caps("no capability lines") == []


class Shell:
    """Answers `docker info` as an engine that is down (or up) would; records what ran."""

    def __init__(self, up=False, tools=("docker", "dockerd", "apt-get")):
        self.up, self.tools, self.ran = up, tools, []

    def which(self, tool):
        return f"/usr/bin/{tool}" if tool in self.tools else None

    def run(self, argv, **kw):
        from playbooks.core.commands import CommandError, Result
        self.ran.append(list(argv))
        if argv[:2] == ["docker", "info"]:
            if not self.up:
                raise CommandError(argv, 1, "Cannot connect to the Docker daemon")
            return Result(tuple(argv), 0, '{"ServerVersion": "20.10.24", "DefaultRuntime": "runc"}', "")
        return Result(tuple(argv), 0, "", "")


class Ctx:
    def __init__(self, sh):
        self.sh = sh

    def say(self, message):
        pass


def test_an_answering_engine_is_left_alone(monkeypatch):
    monkeypatch.setattr(engine, "missing_caps", lambda status=None: [])
    sh = Shell(up=True)
    steps = engine.start_steps(Lab())
    results = [step.check(Ctx(sh)) for step in steps]
    assert [r.state for r in results] == ["ok", "ok", "ok"]
    assert "20.10.24" in results[-1].detail
    assert all(argv[:2] == ["docker", "info"] for argv in sh.ran)


def test_without_root_the_step_says_how_to_get_an_engine(monkeypatch):
    monkeypatch.setattr(engine, "_is_root", lambda: False)
    sh = Shell(up=False, tools=("docker",))
    try:
        engine.start_steps(Lab())[0].check(Ctx(sh))
    except StepFailed as exc:
        assert "needs root" in str(exc) and "docker.start" in str(exc)
    else:
        raise AssertionError("no engine and no root must fail with what to do")


def test_the_wrapper_is_built_only_where_capabilities_are_missing(monkeypatch, tmp_path):
    lab = Lab(bin_dir=tmp_path)
    wrapper_step = engine.start_steps(lab)[1]
    monkeypatch.setattr(engine, "missing_caps", lambda status=None: [])
    assert wrapper_step.check(Ctx(Shell())).state == "ok"
    monkeypatch.setattr(engine, "missing_caps", lambda status=None: [24])
    result = engine.start_steps(lab)[1].check(Ctx(Shell()))
    assert result.state == "changed" and "24" in result.detail


class ProbeShell:
    """One local image; `docker run --privileged` fails the way runc does for the case given."""

    def __init__(self, run_error):
        self.run_error, self.ran = run_error, []

    def run(self, argv, **kw):
        from playbooks.core.commands import Result
        self.ran.append(list(argv))
        if argv[:3] == ["docker", "image", "ls"]:
            return Result(tuple(argv), 0, "kindlab.local/pause:v0.1.0\n<none>:<none>\n", "")
        return Result(tuple(argv), 125, "", self.run_error)


def test_doctor_tells_a_privileged_container_that_cannot_start_from_one_that_can():
    caps = ProbeShell("docker: Error response from daemon: failed to create shim task: OCI runtime create failed: "
                      "runc create failed: unable to start container process: unable to apply caps: operation not "
                      "permitted: unknown")
    status, detail = engine.privileged_problem(caps)
    assert status == "fail" and "unable to apply caps" in detail and "kindlab.local/pause:v0.1.0" in detail
    run = [argv for argv in caps.ran if argv[:2] == ["docker", "run"]][0]
    assert "--privileged" in run and "kindlab.local/pause:v0.1.0" in run  # a local image: nothing to pull
    fine = ProbeShell('runc create failed: unable to start container process: exec: "/kindlab-doctor-probe-does-'
                      'not-exist": stat /kindlab-doctor-probe-does-not-exist: no such file or directory: unknown')
    assert engine.privileged_problem(fine) is None


def test_setup_skips_the_engine_with_the_reason_where_none_can_be_had(monkeypatch):
    monkeypatch.setattr(engine, "_is_root", lambda: False)
    sh = Shell(up=False, tools=("docker",))
    result = engine.start_steps(Lab(), optional=True)[0].check(Ctx(sh))
    assert result.state == "skipped" and "needs root" in result.detail

"""Which failures are retried: transient ones only."""
import pytest
from kubernetes.client.exceptions import ApiException

from playbooks.core.commands import CommandError
from playbooks.core.steps import StepFailed, is_transient


@pytest.mark.parametrize("output", [
    "dial tcp 127.0.0.1:6443: connect: connection refused",
    "read tcp 127.0.0.1:51234->127.0.0.1:6443: read: connection reset by peer",
    "Unable to connect to the server: EOF",
    "Error from server: etcdserver: leader changed",
    "Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress",
    "Error from server (InternalError): the server is currently unable to handle the request",
])
def test_transient_tool_errors(output):
    assert is_transient(CommandError(["kubectl"], 1, output))


@pytest.mark.parametrize("output", [
    "error: error converting YAML to JSON: yaml: line 3: mapping values are not allowed",
    'Error: INSTALLATION FAILED: chart "nope" not found in repo',
    'Error from server (Forbidden): pods is forbidden: User "x" cannot list resource',
    "error: the server doesn't have a resource type \"widgets\"",
])
def test_permanent_tool_errors(output):
    assert not is_transient(CommandError(["kubectl"], 1, output))


@pytest.mark.parametrize("status,expected", [(429, True), (500, True), (503, True), (504, True),
                                             (400, False), (403, False), (404, False), (409, False),
                                             (422, False)])
def test_api_status_codes(status, expected):
    assert is_transient(ApiException(status=status)) is expected


def test_python_connection_errors_are_transient_and_step_failures_are_not():
    assert is_transient(ConnectionRefusedError("refused"))
    assert is_transient(TimeoutError())
    assert not is_transient(StepFailed("connection refused, but we decided this is final"))
    assert not is_transient(ValueError("bad"))

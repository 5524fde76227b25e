"""Documents from tools are read as Kubernetes reads them, not as YAML 1.1 would."""
import json

import pytest
import yaml

from playbooks.core import kyaml

# The shape that broke `monitoring CRDs`: kube-prometheus-stack's alertmanagerconfigs
# CRD lists an unquoted `=` among its enum values.
CRD_ENUM = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: alertmanagerconfigs.monitoring.coreos.com
spec:
  versions:
  - schema:
      openAPIV3Schema:
        properties:
          matchType:
            enum:
            - '!='
            - =
            - =~
            - '!~'
"""


def test_an_unquoted_equals_sign_is_the_string_kubernetes_sees():
    with pytest.raises(yaml.constructor.ConstructorError):  # the trait, as PyYAML's safe loader meets it
        yaml.safe_load(CRD_ENUM)
    crd = kyaml.load(CRD_ENUM)
    enum = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["matchType"]["enum"]
    assert enum == ["!=", "=", "=~", "!~"]


def test_dates_and_base_60_stay_strings_and_survive_json():
    doc = kyaml.load("created: 2024-01-01\nwhen: 2024-01-01T10:00:00Z\nratio: 1:20\nport: 8080\n"
                     "big: 1e5\nhalf: .5\nenabled: yes\nnothing: null\nmode: 0644\n")
    assert doc == {"created": "2024-01-01", "when": "2024-01-01T10:00:00Z", "ratio": "1:20", "port": 8080,
                   "big": 100000.0, "half": 0.5, "enabled": True, "nothing": None, "mode": 420}
    json.dumps(doc)  # a date object would not serialise


def test_objects_drops_empty_documents_and_comments():
    text = "# a comment only\n---\n\n---\n" + CRD_ENUM + "---\nnot: an object\n"
    assert [o["metadata"]["name"] for o in kyaml.objects(text)] == ["alertmanagerconfigs.monitoring.coreos.com"]


def test_explicit_value_and_timestamp_tags_are_plain_strings():
    assert kyaml.load("a: !!value =\nb: !!timestamp 2024-01-01\n") == {"a": "=", "b": "2024-01-01"}

#!/usr/bin/env python3
"""Writes the cert-manager.io/v1 JSON schemas beside this file.

The schemas come from the PyPI package cloudcoil-models-cert-manager (its
pydantic models are generated from cert-manager's CRDs; README.md beside
this file says which version), as pydantic's JSON schema of each model, then:

* every object with named properties and no additionalProperties of its
  own gets `additionalProperties: false`, so an unknown or misspelt field
  fails like `kubectl apply --validate=strict` (the CRDs prune unknown
  fields; the free-form maps keep their additionalProperties);
* apiVersion and kind are required and fixed; metadata and spec required;
* pydantic's `title` and `default` annotations are dropped (noise).

Run it in a virtualenv that has the package:
    python3 -m venv /tmp/cm && /tmp/cm/bin/pip install cloudcoil-models-cert-manager==1.17.1.0
    /tmp/cm/bin/python deploy/kubernetes/schemas/cert-manager/generate.py
"""

import json
import pathlib

from cloudcoil.models.cert_manager import v1

KINDS = ["Certificate", "Issuer", "ClusterIssuer"]
API_VERSION = "cert-manager.io/v1"


def tidy(node):
    """Drops title/default and closes objects, walking every schema node."""
    if isinstance(node, list):
        return [tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("title", "default"):
            continue
        if key in ("properties", "$defs"):
            # A map from names to schemas: the names are data, not keywords.
            out[key] = {name: tidy(schema) for name, schema in value.items()}
        else:
            out[key] = tidy(value)
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def schema(kind):
    raw = getattr(v1, kind).model_json_schema(by_alias=True)
    doc = tidy(raw)
    doc["properties"]["apiVersion"] = {"const": API_VERSION}
    doc["properties"]["kind"] = {"const": kind}
    doc["required"] = sorted(set(doc.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **doc}


def main():
    here = pathlib.Path(__file__).resolve().parent
    for kind in KINDS:
        path = here / f"{kind.lower()}-cert-manager-v1.json"
        path.write_text(json.dumps(schema(kind), indent=1, sort_keys=True) + "\n")
        print(path)


if __name__ == "__main__":
    main()

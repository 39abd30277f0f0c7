#!/usr/bin/env python3
"""Validate Kubernetes manifests offline.

Built-in kinds are checked against the strict JSON schemas that the PyPI package
`kubernetes-validate` ships for the target Kubernetes version. Custom resources are checked
against the openAPIV3Schema of their CRD, read from the repository's contracts/ (cert-manager's
Certificate/Issuer/ClusterIssuer, Argo CD's Application, as scripts/derive-contracts derives them
from the upstream CRDs). Unknown fields in custom resources are errors too: the API server would
silently prune them.

Usage: validate_manifests.py --kubernetes 1.36.0 FILE|DIR...
Prints one line per problem and exits 1 when there is any; an object of a kind nobody has a
schema for is a problem, never skipped.
"""

import argparse
import copy
import json
import os
import sys

import jsonschema
import kubernetes_validate
import yaml

CONTRACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "contracts")
CRD_FILES = [
    "cert-manager/cert-manager.io_certificates.json",
    "cert-manager/cert-manager.io_clusterissuers.json",
    "cert-manager/cert-manager.io_issuers.json",
    "argocd/application-crd.json",
    "argocd/appproject-crd.json",
]


def strict(schema):
    """Close every object schema that lists properties, as structural pruning would."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def load_crd_schemas():
    schemas = {}
    for rel in CRD_FILES:
        path = os.path.join(CONTRACTS, rel)
        with open(path, encoding="utf-8") as f:
            crd = json.load(f)
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            schema = strict(schema)
            # metadata is validated by the API server's ObjectMeta rules, not here.
            schema.setdefault("properties", {})["metadata"] = {"type": "object"}
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def documents(paths):
    for p in paths:
        files = []
        if os.path.isdir(p):
            for root, _dirs, names in os.walk(p):
                files.extend(
                    os.path.join(root, n) for n in sorted(names) if n.endswith((".yaml", ".yml"))
                )
        else:
            files.append(p)
        for f in sorted(files):
            with open(f, encoding="utf-8") as fh:
                for i, doc in enumerate(yaml.safe_load_all(fh)):
                    if doc is not None:
                        yield f, i, doc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubernetes", required=True)
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args()

    crds = load_crd_schemas()
    problems = []
    count = 0
    for f, i, doc in documents(args.paths):
        count += 1
        api_version = doc.get("apiVersion", "?")
        kind = doc.get("kind", "?")
        name = (doc.get("metadata") or {}).get("name", "?")
        where = f"{f} #{i} {kind}/{name}"
        key = (api_version, kind)
        if key in crds:
            validator = jsonschema.Draft7Validator(crds[key])
            for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
                path = ".".join(str(p) for p in err.path)
                problems.append(f"{where}: {path}: {err.message}")
            continue
        try:
            kubernetes_validate.validate(doc, args.kubernetes, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{where}: no schema for {api_version} {kind}")
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            problems.append(f"{where}: {path}: {err.message}")
    for p in problems:
        print(p)
    print(f"validated {count} objects, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

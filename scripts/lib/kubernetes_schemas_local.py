"""Makes the Kubernetes JSON schemas of the kubernetes-validate wheel loadable from files.

    python3 scripts/lib/kubernetes_schemas_local.py SCHEMA_DIR

Each schema names itself https://kubernetes.io/api/... ($id) and refers to the shared definitions as
/api/_definitions.json, which that package's own resolver maps; kubeconform loads files, so the ids
are dropped and the references made relative to the schema file. Rewrites every *.json in place.
"""

import json
import pathlib
import sys

DEFINITIONS = "/api/_definitions.json#"


def relative(node):
    if isinstance(node, dict):
        node.pop("$id", None)
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(DEFINITIONS):
            node["$ref"] = ref[len("/api/"):]
        for value in node.values():
            relative(value)
    elif isinstance(node, list):
        for value in node:
            relative(value)


def main(schema_dir):
    for path in pathlib.Path(schema_dir).glob("*.json"):
        schema = json.loads(path.read_text())
        relative(schema)
        path.write_text(json.dumps(schema))


if __name__ == "__main__":
    main(*sys.argv[1:])

"""Rebuild knative/schemas/kubernetes.json: the Kubernetes schemas the tests need.

The strict ("additionalProperties": false) JSON schemas of the Kubernetes
API come from the ``kubernetes-validate`` package (a PyPI package that ships
them per Kubernetes version). This keeps only the kinds our manifests use,
the definitions they reach, and the definitions the CRD schemas in this
folder refer to; descriptions are dropped. Run it only to move to another
Kubernetes version:

    pip install kubernetes-validate==1.33.*     # into a scratch venv
    python knative/schemas/extract_kubernetes.py \
        <site-packages>/kubernetes_validate/kubernetes-json-schema/v1.33.0-local-strict

See knative/schemas/README.md.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "kubernetes.json"

# apiVersion/kind -> definition name, for every built-in kind we deploy.
KINDS = {
    "v1/Namespace": "io.k8s.api.core.v1.Namespace",
    "v1/ConfigMap": "io.k8s.api.core.v1.ConfigMap",
    "v1/Secret": "io.k8s.api.core.v1.Secret",
    "v1/Service": "io.k8s.api.core.v1.Service",
    "apps/v1/Deployment": "io.k8s.api.apps.v1.Deployment",
    "apps/v1/StatefulSet": "io.k8s.api.apps.v1.StatefulSet",
    "autoscaling/v2/HorizontalPodAutoscaler": "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler",
    "policy/v1/PodDisruptionBudget": "io.k8s.api.policy.v1.PodDisruptionBudget",
    "batch/v1/Job": "io.k8s.api.batch.v1.Job",
}
# Definitions the hand-written CRD schemas (knative.json, ...) refer to.
EXTRA = [
    "io.k8s.api.core.v1.PodSpec",
    "io.k8s.api.core.v1.Container",
    "io.k8s.api.core.v1.Probe",
    "io.k8s.api.core.v1.ResourceRequirements",
    "io.k8s.api.core.v1.Affinity",
    "io.k8s.api.core.v1.Toleration",
    "io.k8s.api.core.v1.TopologySpreadConstraint",
    "io.k8s.api.core.v1.LocalObjectReference",
    "io.k8s.api.core.v1.SecretKeySelector",
    "io.k8s.api.core.v1.SeccompProfile",
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
]
_REF = re.compile(r'"\$ref": "#/\$defs/([^"]+)"')


def _strip(schema: Any) -> Any:
    """Drop descriptions and x-kubernetes-* annotations (not validation)."""
    if isinstance(schema, list):
        return [_strip(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "$defs", "patternProperties") and isinstance(value, dict):
            out[key] = {name: _strip(sub) for name, sub in value.items()}
        elif (key == "description" and isinstance(value, str)) or key.startswith("x-kubernetes-"):
            continue
        else:
            out[key] = _strip(value)
    return out


def main(source_dir: str) -> int:
    definitions = json.loads((Path(source_dir) / "_definitions.json").read_text())["$defs"]
    wanted: set[str] = set()
    pending = [*KINDS.values(), *EXTRA]
    while pending:
        name = pending.pop()
        if name in wanted:
            continue
        wanted.add(name)
        pending.extend(_REF.findall(json.dumps(definitions[name])))
    document = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://kubernetes.io/api/_definitions.json",
        "x-source": f"kubernetes-validate {Path(source_dir).name}, descriptions removed",
        "x-kinds": KINDS,
        "$defs": {name: _strip(definitions[name]) for name in sorted(wanted)},
    }
    OUTPUT.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"{OUTPUT}: {len(wanted)} definitions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))

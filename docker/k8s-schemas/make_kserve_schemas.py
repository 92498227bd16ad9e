#!/usr/bin/env python3
"""Writes servingruntime-v1alpha1.json and inferenceservice-v1beta1.json beside this file: JSON
schemas of KServe's ServingRuntime and InferenceService, from the field names, types and
required fields that the KServe Python SDK's generated model classes declare (facts of KServe's
API; no schema of KServe's is copied: none is published on PyPI). Kubernetes types inside them
(Container, ObjectMeta, ...) refer to Kubernetes' own strict definitions, which
kubernetes-validate bundles; KServe types other than the ones described here are objects left
unchecked. Run by hand when moving to a newer KServe, then review the diff:

  /usr/bin/python3 -m venv /tmp/k && /tmp/k/bin/pip download --no-deps kserve==0.21.0 -d /tmp/k
  (cd /tmp/k && unzip -q kserve-*.whl 'kserve/models/*')
  build-checks/venv/bin/python docker/k8s-schemas/make_kserve_schemas.py /tmp/k
"""
import json
import os
import re
import sys

import kubernetes_validate

HERE = os.path.dirname(os.path.abspath(__file__))
K8S_ID = "https://kubernetes.io/api/_definitions.json"
K8S = json.load(open(os.path.join(
    os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema",
    f"v{kubernetes_validate.utils.all_versions()[-1]}-local-strict", "_definitions.json")))["$defs"]
PROTOCOLS = {"type": "string", "enum": ["v1", "v2", "grpc-v1", "grpc-v2"]}  # KServe's four


def tables(sdk, module):
    """(python name -> type, python name -> JSON name, required JSON names) of one model class."""
    with open(os.path.join(sdk, "kserve", "models", module + ".py")) as f:
        text = f.read()

    def mapping(name):
        body = re.search(name + r" = \{(.*?)\}", text, re.S).group(1)
        return dict(re.findall(r"'(\w+)': '([^']+)'", body))

    names = mapping("attribute_map")
    required = re.findall(r"Invalid value for `(\w+)`, must not be `None`", text)
    return mapping("openapi_types"), names, sorted(names[r] for r in required)


def kubernetes_ref(cls):
    special = {"V1ObjectMeta": "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
               "K8sIoApiAppsV1DeploymentStrategy": "io.k8s.api.apps.v1.DeploymentStrategy",
               "ResourceQuantity": "io.k8s.apimachinery.pkg.api.resource.Quantity"}
    key = special.get(cls) or "io.k8s.api.core.v1." + cls[2:]
    if key not in K8S:
        sys.exit(f"no Kubernetes definition {key} for {cls}")
    return {"$ref": f"{K8S_ID}#/$defs/{key}"}


def schema_of(type_name, described):
    if type_name in ("str", "int", "bool", "object"):
        return {"type": {"str": "string", "int": "integer", "bool": "boolean"}.get(type_name,
                                                                                   "object")}
    if match := re.fullmatch(r"dict\(str, (.+)\)", type_name):
        return {"type": "object", "additionalProperties": schema_of(match.group(1), described)}
    if match := re.fullmatch(r"list\[(.+)\]", type_name):
        return {"type": "array", "items": schema_of(match.group(1), described)}
    if type_name in described:
        return {"$ref": f"#/$defs/{type_name}"}
    if re.match(r"V1(alpha|beta)\d", type_name):
        return {"type": "object"}  # KServe's own, not described here
    return kubernetes_ref(type_name)


def object_schema(sdk, module, described):
    types, names, required = tables(sdk, module)
    schema = {"type": "object", "additionalProperties": False,
              "properties": {names[field]: schema_of(kind, described)
                             for field, kind in sorted(types.items(), key=lambda i: names[i[0]])}}
    if required:
        schema["required"] = required
    return schema


def resource(sdk, file, api_version, kind, top, described, protocols):
    root = object_schema(sdk, top, described)
    root["properties"].update({
        "apiVersion": {"const": api_version}, "kind": {"const": kind}, "status": {"type": "object"},
        "metadata": {"allOf": [kubernetes_ref("V1ObjectMeta"), {"required": ["name"]}]}})
    root["required"] = ["apiVersion", "kind", "metadata", "spec"]
    defs = {cls: object_schema(sdk, module, described) for cls, module in described.items()}
    cls, field, items = protocols
    defs[cls]["properties"][field] = {"type": "array", "items": PROTOCOLS} if items else PROTOCOLS
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$id": f"https://model-server.invalid/schemas/{file}",
              "title": f"KServe {kind} ({api_version}), written by make_kserve_schemas.py"}
    schema.update(root)
    schema["$defs"] = defs
    with open(os.path.join(HERE, file), "w") as out:
        json.dump(schema, out, indent=1)
        out.write("\n")


def main():
    sdk = sys.argv[1]
    resource(sdk, "servingruntime-v1alpha1.json", "serving.kserve.io/v1alpha1", "ServingRuntime",
             "v1alpha1_serving_runtime",
             {"V1alpha1ServingRuntimeSpec": "v1alpha1_serving_runtime_spec",
              "V1alpha1SupportedModelFormat": "v1alpha1_supported_model_format"},
             ("V1alpha1ServingRuntimeSpec", "protocolVersions", True))
    resource(sdk, "inferenceservice-v1beta1.json", "serving.kserve.io/v1beta1", "InferenceService",
             "v1beta1_inference_service",
             {"V1beta1InferenceServiceSpec": "v1beta1_inference_service_spec",
              "V1beta1PredictorSpec": "v1beta1_predictor_spec",
              "V1beta1ModelSpec": "v1beta1_model_spec",
              "V1beta1ModelFormat": "v1beta1_model_format"},
             ("V1beta1ModelSpec", "protocolVersion", False))


if __name__ == "__main__":
    main()

"""Validates the Kubernetes manifests offline, every document of every YAML file under the given
folders (default docker/k8s): Kubernetes' own kinds against Kubernetes' schemas
(kubernetes-validate's bundled ones, strict: an unknown field is an error), at the oldest version
the manifests need and at the newest bundled; custom resources (KServe, the Prometheus Operator,
Kustomize) against ours in docker/k8s-schemas/ (see its README.md), which refer to the same
Kubernetes definitions. A document of a kind neither knows is an error, as is a Kustomization
resource that does not exist. Run by scripts/check_manifests.sh in build-checks/venv.

  build-checks/venv/bin/python scripts/validate_manifests.py [FOLDER_OR_FILE...]
"""
import glob
import json
import os
import sys

import jsonschema
import kubernetes_validate
import referencing
import yaml
from kubernetes_validate import utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMAS = os.path.join(REPO, "docker", "k8s-schemas")
# Native gRPC probes (deployment.yaml) are GA from 1.27.
OLDEST_KUBERNETES = "1.27.0"
OURS = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "servingruntime-v1alpha1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice-v1beta1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-v1.json",
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): "kustomization-v1beta1.json",
}


def kubernetes_definitions(version):
    path = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema",
                        f"v{version}-local-strict", "_definitions.json")
    with open(path) as f:
        return referencing.Resource.from_contents(json.load(f))


def our_errors(document, schema_file, version):
    with open(os.path.join(SCHEMAS, schema_file)) as f:
        schema = json.load(f)
    registry = referencing.Registry().with_resource("https://kubernetes.io/api/_definitions.json",
                                                    kubernetes_definitions(version))
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return [f"{'.'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
            for error in sorted(validator.iter_errors(document), key=lambda e: list(e.path))]


def kubernetes_errors(document, version):
    try:
        kubernetes_validate.validate(document, version, strict=True)
        return []
    except utils.SchemaNotFoundError:
        return [f"no schema for {document['apiVersion']} {document['kind']} (neither "
                "Kubernetes' nor one in docker/k8s-schemas/)"]
    except utils.ValidationError as error:
        where = ".".join(str(p) for p in error.path) or "(top)"
        return [f"{where}: {error.message}"]


def files_under(targets):
    for target in targets:
        if os.path.isdir(target):
            yield from sorted(glob.glob(os.path.join(target, "**", "*.yaml"), recursive=True))
        else:
            yield target


def main():
    targets = sys.argv[1:] or [os.path.join(REPO, "docker", "k8s")]
    versions = [OLDEST_KUBERNETES, utils.all_versions()[-1]]
    failures = checked = 0
    for path in files_under(targets):
        try:
            with open(path) as f:
                documents = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as error:
            print(f"FAIL {os.path.relpath(path)}: not YAML: {error}")
            failures += 1
            continue
        for document in documents:
            if not isinstance(document, dict) or "apiVersion" not in document or \
                    "kind" not in document:
                print(f"FAIL {os.path.relpath(path)}: a document without apiVersion and kind")
                failures += 1
                continue
            name = document.get("metadata", {}).get("name", "")
            what = f"{os.path.relpath(path)}: {document['kind']} {name}".rstrip()
            key = (document["apiVersion"], document["kind"])
            errors = []
            for version in versions:
                found = (our_errors(document, OURS[key], version) if key in OURS else
                         kubernetes_errors(document, version))
                errors += [f"Kubernetes {version}: {e}" for e in found]
            if key[1] == "Kustomization":
                for resource in document.get("resources", []):
                    if not os.path.exists(os.path.join(os.path.dirname(path), resource)):
                        errors.append(f"resources: {resource} does not exist")
            checked += 1
            if errors:
                failures += 1
                print(f"FAIL {what}")
                for error in dict.fromkeys(errors):  # in order, once each
                    print(f"  {error}")
            else:
                against = f"ours ({OURS[key]})" if key in OURS else "Kubernetes'"
                print(f"ok   {what} (against {against} schema, Kubernetes "
                      f"{' and '.join(versions)})")
    print(f"validate_manifests: {checked} documents, {failures} invalid")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())

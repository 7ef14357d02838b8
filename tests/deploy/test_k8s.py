"""The Kubernetes manifests under deploy/k8s, checked offline.

Core objects (Deployment, Service, Job, ConfigMap, PodDisruptionBudget) are validated, strictly
(unknown fields fail), against the Kubernetes JSON schemas that the pinned `kubernetes-validate`
package bundles. KEDA's ScaledObject and TriggerAuthentication are validated against JSON schemas
written by hand from KEDA 2's CRDs (deploy/k8s/schemas/; no package registry ships them as a
schema file, only as compiled validators), which also reject unknown fields.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33.0"
KEDA_SCHEMAS = {
    "ScaledObject": K8S / "schemas" / "keda-scaledobject-v1alpha1.json",
    "TriggerAuthentication": K8S / "schemas" / "keda-triggerauthentication-v1alpha1.json",
}
# The Redis scaler's parameters, from KEDA's documentation of the `redis` trigger.
REDIS_SCALER_PARAMETERS = {
    "address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv", "username",
    "usernameFromEnv", "passwordFromEnv", "listName", "listLength", "activationListLength",
    "databaseIndex", "enableTLS", "unsafeSsl",
}  # fmt: skip
SECRET_NAMES = ("SECRET", "PASSWORD", "API_KEY", "DSN", "DATABASE_URL", "REDIS_URL")
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


DOCS = documents()
BY_KIND: dict[tuple[str, str], dict[str, Any]] = {
    (d["kind"], d["metadata"]["name"]): d for _, d in DOCS
}


def workload(kind: str, name: str) -> dict[str, Any]:
    return BY_KIND[(kind, name)]["spec"]["template"]["spec"]


def secret_refs(container: dict[str, Any]) -> dict[str, str]:
    """The container's variables taken from a Secret: name -> the Secret's key."""
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def containers() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for label, doc in DOCS:
        if doc["kind"] in ("Deployment", "Job"):
            found += [(label, c) for c in doc["spec"]["template"]["spec"]["containers"]]
    return found


@pytest.mark.parametrize(
    "doc", [d for _, d in DOCS if d["kind"] not in KEDA_SCHEMAS], ids=lambda d: d["kind"]
)
def test_core_objects_validate_strictly_against_the_kubernetes_schemas(doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("kind", sorted(KEDA_SCHEMAS))
def test_keda_objects_validate_against_the_crd_schemas(kind):
    schema = json.loads(KEDA_SCHEMAS[kind].read_text())
    docs = [d for _, d in DOCS if d["kind"] == kind]

    assert docs
    for doc in docs:
        jsonschema.validate(doc, schema)


def test_the_keda_schema_rejects_what_the_crd_rejects():
    schema = json.loads(KEDA_SCHEMAS["ScaledObject"].read_text())
    good = BY_KIND[("ScaledObject", "ledgerly-worker")]
    no_target = {**good, "spec": {k: v for k, v in good["spec"].items() if k != "scaleTargetRef"}}
    misspelt = {**good, "spec": {**good["spec"], "maxReplicas": 3}}
    numeric_metadata = {
        **good,
        "spec": {**good["spec"], "triggers": [{"type": "redis", "metadata": {"listLength": 10}}]},
    }

    for bad in (no_target, misspelt, numeric_metadata):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_the_kubernetes_schema_check_is_strict():
    web = BY_KIND[("Deployment", "ledgerly-web")]
    typo = {**web, "spec": {**web["spec"], "replica": 2}}

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSION, strict=True)


def test_web_has_liveness_and_readiness_probes_on_the_health_endpoints():
    (web,) = workload("Deployment", "ledgerly-web")["containers"]

    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert web["livenessProbe"]["httpGet"]["port"] == "http"


@pytest.mark.parametrize(("label", "container"), containers(), ids=lambda x: str(x)[:40])
def test_every_container_has_resource_requests_and_limits(label, container):
    resources = container["resources"]

    assert set(resources["requests"]) == {"cpu", "memory"}, label
    assert set(resources["limits"]) == {"cpu", "memory"}, label


def test_the_service_routes_to_the_web_pods():
    service = BY_KIND[("Service", "ledgerly-web")]["spec"]
    web = BY_KIND[("Deployment", "ledgerly-web")]

    assert service["selector"].items() <= web["spec"]["template"]["metadata"]["labels"].items()
    assert service["ports"][0]["targetPort"] == "http"


def test_workers_are_scaled_by_keda_on_the_celery_queue_length():
    scaled = BY_KIND[("ScaledObject", "ledgerly-worker")]["spec"]
    (trigger,) = scaled["triggers"]
    auth = BY_KIND[("TriggerAuthentication", trigger["authenticationRef"]["name"])]["spec"]
    worker = BY_KIND[("Deployment", "ledgerly-worker")]

    assert scaled["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "ledgerly-worker",
    }
    assert "replicas" not in worker["spec"]  # KEDA's HPA owns it
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == "celery"  # Celery's default queue on Redis
    assert int(trigger["metadata"]["listLength"]) > 0
    assert set(trigger["metadata"]) <= REDIS_SCALER_PARAMETERS
    assert 1 <= scaled["minReplicaCount"] < scaled["maxReplicaCount"]
    assert auth["secretTargetRef"] == [
        {"parameter": "password", "name": "ledgerly-secrets", "key": "REDIS_PASSWORD"}
    ]


def test_the_scalers_env_parameters_exist_in_the_worker_containers_env():
    trigger = BY_KIND[("ScaledObject", "ledgerly-worker")]["spec"]["triggers"][0]["metadata"]
    config = BY_KIND[("ConfigMap", "ledgerly-config")]["data"]
    (worker,) = workload("Deployment", "ledgerly-worker")["containers"]

    assert {"name": "ledgerly-config"} in [e["configMapRef"] for e in worker["envFrom"]]
    for parameter in ("hostFromEnv", "portFromEnv"):
        assert trigger[parameter] in config


def test_beat_is_a_single_replica_that_is_recreated_never_rolled():
    beat = BY_KIND[("Deployment", "ledgerly-beat")]["spec"]
    (container,) = beat["template"]["spec"]["containers"]

    assert beat["replicas"] == 1
    assert beat["strategy"] == {"type": "Recreate"}
    assert container["command"][:4] == ["celery", "-A", "ledgerly", "beat"]


def test_migrations_run_as_a_job_that_does_not_restart_forever():
    job = BY_KIND[("Job", "ledgerly-migrate")]["spec"]
    (container,) = job["template"]["spec"]["containers"]

    assert job["template"]["spec"]["restartPolicy"] == "Never"
    assert job["backoffLimit"] <= 3
    assert "manage.py migrate --no-input" in " ".join(container["command"])


@pytest.mark.parametrize(("label", "container"), containers(), ids=lambda x: str(x)[:40])
def test_secrets_reach_the_pods_only_by_reference(label, container):
    env = {e["name"]: e for e in container.get("env", [])}
    secret_like = [name for name in env if any(s in name for s in SECRET_NAMES)]

    assert {"DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ANTHROPIC_API_KEY"} <= set(env)
    assert secret_like
    for name in secret_like:
        assert "value" not in env[name], f"{label}: {name} has a literal value"
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "ledgerly-secrets"


def test_no_secret_object_or_value_is_kept_in_the_repository():
    config = BY_KIND[("ConfigMap", "ledgerly-config")]["data"]

    assert [label for label, d in DOCS if d["kind"] == "Secret"] == []
    assert [k for k in config if any(s in k for s in SECRET_NAMES)] == []
    assert "sk-ant-" not in "".join(p.read_text() for p in MANIFESTS)


def test_the_kustomization_lists_every_long_running_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())

    assert set(kustomization["resources"]) == {p.name for p in MANIFESTS} - {"migrate-job.yaml"}


def _image_env(name: str) -> str:
    match = re.search(rf"\b{name}=(\S+)", (ROOT / "Dockerfile").read_text())
    assert match is not None
    return match.group(1)


@pytest.mark.parametrize("name", ["ledgerly-web", "ledgerly-worker", "ledgerly-beat"])
def test_the_metrics_directory_survives_the_tmp_volume(name):
    # An emptyDir on /tmp hides the image's PROMETHEUS_MULTIPROC_DIR: it needs its own mount.
    (container,) = workload("Deployment", name)["containers"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}

    assert "/tmp" in mounts  # noqa: S108  (a path in a manifest, not a file we open)
    assert _image_env("PROMETHEUS_MULTIPROC_DIR") in mounts


def test_workers_serve_their_metrics_where_prometheus_scrapes():
    worker = BY_KIND[("Deployment", "ledgerly-worker")]["spec"]["template"]
    (container,) = worker["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}

    assert worker["metadata"]["annotations"]["prometheus.io/port"] == env["METRICS_PORT"]
    assert {"name": "metrics", "containerPort": int(env["METRICS_PORT"])} in container["ports"]


@pytest.mark.parametrize(("label", "container"), containers(), ids=lambda x: str(x)[:40])
def test_the_configmap_and_the_secrets_make_a_valid_production_configuration(label, container):
    config = BY_KIND[("ConfigMap", "ledgerly-config")]["data"]
    stand_ins = {  # what the Secret would hold; no connection is made by `check`
        "DJANGO_SECRET_KEY": "a-long-test-secret-for-the-check",
        "DATABASE_URL": "postgresql://ledgerly:pw@db.invalid:5432/ledgerly",
        "REDIS_URL": "redis://:pw@redis.invalid:6379/0",
        "ANTHROPIC_API_KEY": "test-key-not-real",
        "SENTRY_DSN": "",
    }
    secrets = {name: stand_ins[key] for name, key in secret_refs(container).items()}
    env = {"PATH": os.environ["PATH"], **config, **secrets}
    checked = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert checked.returncode == 0, f"{label}: {checked.stderr}"

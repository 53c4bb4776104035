"""deploy/k8s: the generated base is current, every overlay builds with kubectl kustomize, the
core objects validate against the Kubernetes schemas, and the KEDA / monitoring objects agree
with the code (partition counts, consumer groups, alert rules)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from distillery.contracts.channels import PARTITIONS

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBECTL = shutil.which("kubectl")


def kustomize_major() -> int:
    """The major version of the kustomize built into kubectl (0: no kubectl, or unknown)."""
    if KUBECTL is None:
        return 0
    out = subprocess.run([KUBECTL, "version", "--client"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"Kustomize Version: v(\d+)", out)
    return int(match.group(1)) if match else 0


needs_kubectl = pytest.mark.skipif(kustomize_major() < 4, reason="needs kubectl with kustomize v4+ (the overlays use "
                                                                  "'patches' with targets); none installed here")
CORE = {"Deployment", "Service", "PersistentVolumeClaim", "ConfigMap", "CronJob"}


def generator():
    from distillery_gen import k8s

    return k8s


def built(overlay: str) -> list[dict]:
    result = subprocess.run([KUBECTL, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_the_committed_base_is_what_the_generator_writes() -> None:
    committed = {p.name: p.read_text() for p in (K8S / "base").iterdir()}
    assert committed == generator().rendered(), "run: python -m distillery_gen.k8s"


@needs_kubectl
@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_each_overlay_builds_and_its_core_objects_match_the_kubernetes_schema(overlay: str) -> None:
    docs = built(overlay)
    assert {d["metadata"].get("namespace") for d in docs} == {{"dev": "distillery-dev", "prod": "distillery"}[overlay]}
    validated = 0
    for doc in docs:
        if doc["kind"] in CORE:
            kubernetes_validate.validate(doc, "1.30.0", strict=True)
            validated += 1
    assert validated >= 10


def test_the_schema_check_rejects_a_misspelt_field() -> None:
    deployment = generator().documents()["deployments.yaml"][0]
    deployment["spec"]["replicaz"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.30.0", strict=True)


@needs_kubectl
def test_deployments_run_non_root_with_probes_resources_and_the_spec_configmap() -> None:
    docs = built("prod")
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {"router", "judge", "editor", "trainer", "evaluator", "teacher-smollm2", "teacher-qwen-coder"}
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
        assert container["image"].startswith("registry.example.com/distillery/")
        assert {"secretRef": {"name": "distillery-kafka-auth"}} in container["envFrom"]  # SASL/TLS from a Secret
        spec_volume = next(v for v in pod["volumes"] if v["name"] == "spec")
        assert spec_volume["configMap"]["name"].startswith("distillery-spec-")  # the generated, hashed name
    assert (K8S / "base" / "spec.yaml").read_text() == (K8S.parents[1] / "examples" / "spec.yaml").read_text()


@needs_kubectl
def test_the_judge_and_the_editor_are_checkpointed_hourly_on_the_volume_they_restart_from() -> None:
    docs = built("prod")
    deployments, jobs = by_kind(docs, "Deployment"), by_kind(docs, "CronJob")
    assert set(jobs) == {"judge-checkpoint", "editor-checkpoint"}
    for name in ("judge", "editor"):
        job = jobs[f"{name}-checkpoint"]
        assert job["spec"]["concurrencyPolicy"] == "Forbid" and job["spec"]["schedule"] == "17 * * * *"
        pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        (served,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", f"distillery_{name}", "checkpoint"]
        assert container["image"] == served["image"] and container["envFrom"] == served["envFrom"]
        assert container["env"] == served["env"] and {"name": "DISTILLERY_STATE_DIR", "value": "/artifacts/state"} in served["env"]
        assert container["volumeMounts"] == served["volumeMounts"]
        assert pod["volumes"] == deployments[name]["spec"]["template"]["spec"]["volumes"]
        assert {"name": "artifacts", "persistentVolumeClaim": {"claimName": "distillery-artifacts"}} in pod["volumes"]


@needs_kubectl
def test_keda_scales_each_consumer_group_on_lag_up_to_its_partitions() -> None:
    docs = built("prod")
    deployments, scaled = by_kind(docs, "Deployment"), by_kind(docs, "ScaledObject")
    assert set(scaled) == set(deployments)
    for name, so in scaled.items():
        (trigger,) = so["spec"]["triggers"]
        meta = trigger["metadata"]
        stem = meta["topic"].removeprefix("distill.").removesuffix(".v1")
        cap = PARTITIONS["generation.requests" if stem.startswith("generation.requests") else stem]
        assert trigger["type"] == "kafka" and 1 <= so["spec"]["maxReplicaCount"] <= cap, name
        env = {e["name"]: e["value"] for e in deployments[name]["spec"]["template"]["spec"]["containers"][0]["env"]}
        if name.startswith("teacher-"):
            assert meta["consumerGroup"] == f"distillery-teacher-{env['DISTILLERY_TEACHER_ID']}"
        else:  # the group the service uses: its own setting, or distillery-<service>
            assert meta["consumerGroup"] == env.get("DISTILLERY_CONSUMER_GROUP", f"distillery-{name}")
    dev = by_kind(built("dev"), "ScaledObject")
    assert all(so["spec"]["maxReplicaCount"] == 1 for so in dev.values())


@needs_kubectl
def test_monitoring_objects_scrape_every_pod_and_carry_the_alert_rules() -> None:
    docs = built("prod")
    (monitor,) = by_kind(docs, "PodMonitor").values()
    selector = monitor["spec"]["selector"]["matchLabels"]
    for d in by_kind(docs, "Deployment").values():
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        assert any(p["name"] == "http" for p in d["spec"]["template"]["spec"]["containers"][0]["ports"])
    (rule,) = by_kind(docs, "PrometheusRule").values()
    alerts = yaml.safe_load((K8S.parent / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]

"""Write the Kustomize base (deploy/k8s/base) from the table below and the code's own facts
(topic partition counts, consumer groups, versions, the example spec, the alert rules).

Run ``python -m distillery_gen.k8s`` after editing; a test fails when the committed manifests are
not what this writes, and validates ``kubectl kustomize`` output of every overlay.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

from distillery.contracts.channels import group_name, main_input
from distillery.contracts.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s" / "base"
VERSION = "0.1.0"
PART_OF = {"app.kubernetes.io/part-of": "distillery"}
# A fixed judge version per Deployment: deploy a new version as a new Deployment, whose group the table names.
JUDGE_VERSION = "rules-v1"
# deployment -> (image, extra env, resources (cpu, memory)); the topic and consumer group each one scales
# on come from the channel table (the service's main input).
SERVICES = {
    "router": ("router", {}, ("250m", "256Mi")),
    "judge": ("judge", {"DISTILLERY_CONSUMER_GROUP": group_name("judge", judge_version=JUDGE_VERSION),
                        "DISTILLERY_STATE_DIR": "/artifacts/state"}, ("1", "2Gi")),
    "editor": ("editor", {"DISTILLERY_STATE_DIR": "/artifacts/state"}, ("1", "2Gi")),
    "trainer": ("trainer", {"DISTILLERY_ARTIFACT_DIR": "/artifacts"}, ("2", "8Gi")),
    "evaluator": ("evaluator", {}, ("2", "4Gi")),
}
# The artifacts volume (ReadWriteMany): the trainer's students for the evaluator, and the judge's and the
# editor's checkpoints, which every replica may write and read (runtime/checkpoint.py).
SHARED_ARTIFACTS = {"trainer", "evaluator", "judge", "editor"}
CHECKPOINTED = {"judge", "editor"}  # their state is a fold over topics, checkpointed on a schedule
CHECKPOINT_SCHEDULE = "17 * * * *"  # hourly: ~1 h of history for a restart to read, past the last checkpoint


def table() -> dict[str, tuple]:
    """deployment -> (image, consumer group KEDA scales on, topic, partitions, extra env, resources)."""
    rows = {}
    for name, (image, env, resources) in SERVICES.items():
        channel, consumer = main_input(name)
        group = env.get("DISTILLERY_CONSUMER_GROUP") or group_name(name, consumer.suffix)
        rows[name] = (image, group, channel.topic(), channel.partitions, env, resources)
    spec = load_spec(ROOT / "examples" / "spec.yaml")
    channel, consumer = main_input("teacher")
    for t in spec.routed_teachers():
        rows[f"teacher-{t}"] = ("teacher", group_name("teacher", consumer.suffix, teacher_id=t),
                                channel.topic(teacher_id=t), channel.partitions, {"DISTILLERY_TEACHER_ID": t}, ("2", "4Gi"))
    return rows


def deployment(name: str, image: str, env: dict[str, str], cpu: str, memory: str) -> dict:
    labels = {"app.kubernetes.io/name": name, **PART_OF}
    mounts = [{"name": "spec", "mountPath": "/config", "readOnly": True}, {"name": "home", "mountPath": "/home/distillery"},
              {"name": "tmp", "mountPath": "/tmp"}]
    volumes = [{"name": "spec", "configMap": {"name": "distillery-spec"}}, {"name": "home", "emptyDir": {}},
               {"name": "tmp", "emptyDir": {}}]
    if name in SHARED_ARTIFACTS:
        mounts.append({"name": "artifacts", "mountPath": "/artifacts"})
        volumes.append({"name": "artifacts", "persistentVolumeClaim": {"claimName": "distillery-artifacts"}})
    probe = {"httpGet": {"path": "/health/live", "port": "http"}, "periodSeconds": 15, "timeoutSeconds": 3}
    container = {
        "name": name, "image": f"distillery-{image}:{VERSION}", "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": 8080}],
        "envFrom": [{"configMapRef": {"name": "distillery-kafka"}}],
        "env": [{"name": k, "value": v} for k, v in {"DISTILLERY_HTTP_HOST": "0.0.0.0", "DISTILLERY_HTTP_PORT": "8080",
                                                      "DISTILLERY_SPEC_PATH": "/config/spec.yaml", **env}.items()],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}},
        "startupProbe": {**probe, "failureThreshold": 40},
        "livenessProbe": probe,
        "readinessProbe": {"httpGet": {"path": "/health/ready", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 3},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                             "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                         "containers": [container], "volumes": volumes},
            },
        },
    }


def checkpoint_job(name: str, image: str, env: dict[str, str], cpu: str, memory: str) -> dict:
    """A CronJob beside the judge or editor Deployment: ``python -m distillery_<name> checkpoint`` on the
    same volume, so a restart reads at most CHECKPOINT_SCHEDULE's worth of history (docs/operations.md)."""
    pod = copy.deepcopy(deployment(name, image, env, cpu, memory)["spec"]["template"])
    container = pod["spec"]["containers"][0]
    for key in ("ports", "startupProbe", "livenessProbe", "readinessProbe"):
        del container[key]
    container["command"] = ["python", "-m", f"distillery_{image}", "checkpoint"]
    pod["spec"]["restartPolicy"] = "OnFailure"
    labels = {"app.kubernetes.io/name": f"{name}-checkpoint", **PART_OF}
    pod["metadata"]["labels"] = dict(labels)
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": f"{name}-checkpoint", "labels": labels},
            "spec": {"schedule": CHECKPOINT_SCHEDULE, "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 1,
                     "jobTemplate": {"spec": {"backoffLimit": 2, "template": pod}}}}


def scaled_object(name: str, group: str, topic: str, partitions: int) -> dict:
    """Scale on the consumer group's lag; more replicas than partitions would sit idle."""
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name, "labels": dict(PART_OF)},
        "spec": {
            "scaleTargetRef": {"name": name}, "minReplicaCount": 1, "maxReplicaCount": partitions,
            "triggers": [{"type": "kafka", "metadata": {
                "bootstrapServersFromEnv": "KAFKA_BOOTSTRAP_SERVERS", "consumerGroup": group, "topic": topic,
                "lagThreshold": "50", "offsetResetPolicy": "earliest"}}],
        },
    }


def pod_monitor() -> dict:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "distillery", "labels": dict(PART_OF)},
            "spec": {"selector": {"matchLabels": dict(PART_OF)},
                     "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}]}}


def prometheus_rule() -> dict:
    groups = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"]
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "distillery", "labels": dict(PART_OF)}, "spec": {"groups": groups}}


def documents() -> dict[str, list[dict]]:
    rows = table()
    return {
        "deployments.yaml": [deployment(n, img, env, *res) for n, (img, _, _, _, env, res) in rows.items()],
        "scaledobjects.yaml": [scaled_object(n, group, topic, parts) for n, (_, group, topic, parts, _, _) in rows.items()],
        "checkpoints.yaml": [checkpoint_job(n, img, env, *res) for n, (img, _, _, _, env, res) in rows.items()
                             if n in CHECKPOINTED],
        "monitoring.yaml": [pod_monitor(), prometheus_rule()],
        "storage.yaml": [{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                          "metadata": {"name": "distillery-artifacts", "labels": dict(PART_OF)},
                          "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "20Gi"}}}},
                         {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "router", "labels": dict(PART_OF)},
                          "spec": {"selector": {"app.kubernetes.io/name": "router"},
                                   "ports": [{"name": "http", "port": 8080, "targetPort": "http"}]}}],
    }


def kustomization() -> dict:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": sorted(documents()),
        "configMapGenerator": [
            {"name": "distillery-spec", "files": ["spec.yaml"]},
            {"name": "distillery-kafka", "literals": ["KAFKA_BOOTSTRAP_SERVERS=kafka:9092", "DISTILLERY_TOPIC_PREFIX=distill"]},
        ],
    }


def rendered() -> dict[str, str]:
    header = "# Generated by cli/distillery_gen/k8s.py; edit the script, not this file.\n"
    out = {name: header + yaml.safe_dump_all(docs, sort_keys=False) for name, docs in documents().items()}
    out["kustomization.yaml"] = header + yaml.safe_dump(kustomization(), sort_keys=False)
    out["spec.yaml"] = (ROOT / "examples" / "spec.yaml").read_text()  # the ConfigMap's source, kept in step
    return out


def main() -> int:
    BASE.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (BASE / name).write_text(text)
    print(f"wrote {len(rendered())} files to {BASE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

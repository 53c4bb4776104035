"""docker-compose.yml and the Dockerfiles, checked statically (no Docker engine runs here)."""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path

import yaml
from pydantic import AliasChoices

from distillery.contracts.channels import Topics
from distillery.contracts.settings import ServiceSettings
from distillery.contracts.spec import load_spec
from tests.unit.test_prometheus_rules import needs_promtool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
# compose service -> (the module holding its settings class, the Dockerfile's service)
DISTILLERY = {"router": "distillery_router.ingest", "judge": "distillery_judge.handlers", "editor": "distillery_editor.handlers",
              "trainer": "distillery_trainer.handlers", "evaluator": "distillery_evaluator.handlers",
              "teacher-smollm2": "distillery_teacher.handlers",
              "teacher-qwen-coder": "distillery_teacher.handlers", "teacher-vllm": "distillery_teacher.handlers"}


def settings_class(module: str) -> type[ServiceSettings]:
    classes = [c for c in vars(importlib.import_module(module)).values()
               if isinstance(c, type) and issubclass(c, ServiceSettings)]
    return max(classes, key=lambda c: len(c.__mro__))  # the service's own subclass, else the base


# read by the model library itself (distillery.domain.models.model_cache_dir), in every model service
LIBRARY_ENV = {"DISTILLERY_MODEL_CACHE", "HF_HUB_OFFLINE"}


def env_names(cls: type[ServiceSettings]) -> set[str]:
    """Every environment variable that sets a field of ``cls`` (prefix, or an alias)."""
    names = set()
    for field, info in cls.model_fields.items():
        names.add(f"DISTILLERY_{field.upper()}")
        if isinstance(info.validation_alias, AliasChoices):
            names.update(a for a in info.validation_alias.choices if isinstance(a, str))
    return names


def dockerfile(service: str) -> tuple[Path, str]:
    build = SERVICES[service]["build"]
    path = ROOT / build["context"] / build["dockerfile"]
    return path, path.read_text()


def test_every_distillery_service_is_in_compose_and_builds_from_the_repo() -> None:
    assert set(DISTILLERY) <= set(SERVICES)
    for service in DISTILLERY:
        path, text = dockerfile(service)
        assert path.is_file() and (ROOT / SERVICES[service]["build"]["context"]).is_dir()
        assert re.search(r"^FROM python:3\.11-slim$", text, re.M), service
        assert re.search(r"^USER (?!root)\w+", text, re.M), f"{service}: runs as non-root"
        assert "HEALTHCHECK" in text and "/health/live" in text, service
        assert 'org.opencontainers.image.version="${VERSION}"' in text


def test_each_image_installs_only_its_own_service_and_labels_its_version() -> None:
    for name in ("router", "teacher", "judge", "editor", "trainer", "evaluator"):
        text = (ROOT / "services" / name / "Dockerfile").read_text()
        installed = set(re.findall(r"\./services/(\w+)", text))
        assert installed == {name}, (name, installed)
        version = importlib.import_module(f"distillery_{name}").__version__
        assert f"ARG VERSION={version}" in text and f"distillery-{name}:{version}" in text
        assert f'CMD ["python", "-m", "distillery_{name}"]' in text
    assert "torch" not in (ROOT / "services" / "router" / "Dockerfile").read_text()  # routing needs no ML
    for service in DISTILLERY:  # compose tags and labels each image with its service's own version
        name = SERVICES[service]["build"]["dockerfile"].split("/")[1]
        version = importlib.import_module(f"distillery_{name}").__version__
        assert SERVICES[service]["image"] == f"distillery-{name}:{version}"
        assert str(SERVICES[service]["build"]["args"]["VERSION"]) == version


def test_every_environment_variable_is_a_real_setting_of_its_service() -> None:
    for service, module in DISTILLERY.items():
        allowed = env_names(settings_class(module))
        env = SERVICES[service]["environment"]
        unknown = sorted(set(env) - allowed)
        assert not unknown, f"{service} sets {unknown}, which no field of its settings reads"
        _, text = dockerfile(service)
        baked = set(re.findall(r"\b(DISTILLERY_[A-Z_]+)=", text))
        assert not baked - allowed - LIBRARY_ENV, (service, sorted(baked - allowed - LIBRARY_ENV))


def test_every_mapped_port_is_the_one_the_service_listens_on() -> None:
    for service in DISTILLERY:
        _, text = dockerfile(service)
        listen = int(SERVICES[service]["environment"].get("DISTILLERY_HTTP_PORT")
                     or re.search(r"DISTILLERY_HTTP_PORT=(\d+)", text).group(1))
        assert f"EXPOSE {listen}" in text
        for mapping in SERVICES[service]["ports"]:
            assert int(str(mapping).rsplit(":", 1)[1]) == listen, (service, mapping)
    hosts = [str(m).split(":")[0] for s in SERVICES.values() for m in s.get("ports", [])]
    assert len(hosts) == len(set(hosts)), "two services map the same host port"


def test_kafka_is_single_node_kraft_and_the_topic_job_creates_the_pipelines_topics() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller" and env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env[key] == 1, key
    created = dict(re.findall(r"^create (\S+) (\d+)$", SERVICES["topics"]["command"][0], re.M))
    teachers = set(load_spec(ROOT / "examples" / "spec.yaml").routed_teachers()) | set(
        load_spec(ROOT / "examples" / "spec.gpu.yaml").routed_teachers())
    expected = Topics("distill").all_topics(sorted(teachers))
    assert {t: int(n) for t, n in created.items()} == expected
    for service in DISTILLERY:
        assert SERVICES[service]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_teachers_in_compose_are_the_specs_teachers() -> None:
    cpu = load_spec(ROOT / "examples" / "spec.yaml").routed_teachers()
    gpu = load_spec(ROOT / "examples" / "spec.gpu.yaml").routed_teachers()
    for teacher in gpu:
        service = SERVICES[f"teacher-{teacher}"]
        assert service["environment"]["DISTILLERY_TEACHER_ID"] == teacher
        assert ("gpu" in service.get("profiles", [])) == (teacher not in cpu)
    vllm = SERVICES["vllm"]
    assert vllm["profiles"] == ["gpu"] and vllm["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_prometheus_and_grafana_load_the_repos_rules_and_dashboards() -> None:
    for service in ("prometheus", "grafana"):
        for volume in SERVICES[service]["volumes"]:
            assert (ROOT / volume.split(":")[0]).exists(), volume
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    cpu_services = {s for s in DISTILLERY if "gpu" not in SERVICES[s].get("profiles", [])}
    assert targets == {f"{s}:8080" for s in cpu_services}
    jobs = {job["job_name"] for job in scrape["scrape_configs"]}
    assert jobs == {"router", "teacher", "judge", "editor", "trainer", "evaluator"}  # the alert rules' job labels


@needs_promtool
def test_promtool_accepts_the_prometheus_config() -> None:
    result = subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=ROOT / "deploy" / "prometheus",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

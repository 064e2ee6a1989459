"""Plugin config classes: validation by build_config, redaction and the JSON schema."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import pytest

from homelab_core.errors import ConfigError
from homelab_core.options import (
    REDACTED,
    NoConfig,
    build_config,
    config_schema,
    config_to_dict,
    option,
    redact_mapping,
    secret_fields,
)


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.define
class WebConfig:
    url: str = option(description="Address to probe.")
    timeout: float = option(5.0, description="Seconds to wait.")
    retries: int = option(3)
    verify: bool = option(True)
    tags: list[str] = option(factory=list, description="Extra labels.")
    ports: list[int] = option(factory=lambda: [80, 443])
    headers: dict[str, str] = option(factory=dict)
    weights: dict[str, float] = option(factory=dict)
    mode: Literal["get", "head"] = option("get")
    color: Color = option(Color.RED)
    proxy: str | None = option(None)
    limit: int | None = option(None)
    token: str = option("", secret=True, description="API token.")


@attrs.define
class PinConfig:
    pin: int = option(secret=True)


@attrs.define
class TupleConfig:
    hosts: tuple[str, ...] = option(factory=tuple)


@attrs.define
class LevelConfig:
    level: Level = option(Level.LOW)


@attrs.define
class AbstractCollectionsConfig:
    hosts: Sequence[str] = option(factory=list)
    limits: Mapping[str, int] = option(factory=dict)


@attrs.define
class ValidatedConfig:
    count: int = option(1, validator=attrs.validators.gt(0))


@attrs.define
class ValidatedSecretConfig:
    token: str = option(secret=True, validator=attrs.validators.in_(["alpha", "beta"]))


def build(data: Mapping[str, Any], **kwargs: Any) -> WebConfig:
    return build_config(WebConfig, {"url": "http://nas.lan", **data}, **kwargs)


# --- validation ---------------------------------------------------------------------------


def test_build_config_fills_defaults_for_fields_left_out() -> None:
    config = build_config(WebConfig, {"url": "http://nas.lan"})

    assert config == WebConfig(url="http://nas.lan")
    assert config.timeout == 5.0
    assert config.ports == [80, 443]
    assert config.proxy is None


def test_missing_required_field_error_names_field_and_says_required() -> None:
    with pytest.raises(ConfigError) as info:
        build_config(WebConfig, {}, file="homelab.toml", table="plugins.web")

    assert info.value.field == "url"
    assert info.value.reason == "is required"
    assert str(info.value) == "homelab.toml [plugins.web] url: is required"


def test_unknown_field_error_names_file_table_and_field() -> None:
    with pytest.raises(ConfigError) as info:
        build({"colour": "red"}, file="homelab.toml", table="plugins.web")

    assert (info.value.file, info.value.table, info.value.field) == (
        "homelab.toml",
        "plugins.web",
        "colour",
    )
    assert str(info.value).startswith("homelab.toml [plugins.web] colour: unknown field")


def test_unknown_field_error_lists_accepted_fields() -> None:
    with pytest.raises(ConfigError) as info:
        build({"colour": "red"})

    accepted = (
        "color, headers, limit, mode, ports, proxy, retries, tags, timeout, token, url,"
        " verify, weights"
    )
    assert info.value.reason == f"unknown field; accepted fields: {accepted}"


def test_unknown_field_on_config_without_fields_says_none_accepted() -> None:
    with pytest.raises(ConfigError, match="accepted fields: none"):
        build_config(NoConfig, {"anything": 1})


def test_error_without_file_or_table_names_only_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        build({"retries": "x"})

    assert str(info.value) == "retries: expected int, got 'x'"


def test_wrong_type_error_names_expected_type_and_given_value() -> None:
    with pytest.raises(ConfigError) as info:
        build({"retries": "three"}, file="homelab.toml", table="plugins.web")

    assert info.value.field == "retries"
    assert info.value.reason == "expected int, got 'three'"


def test_wrong_type_error_for_list_names_element_type() -> None:
    with pytest.raises(ConfigError, match=r"ports: expected list\[int\], got \['http'\]"):
        build({"ports": ["http"]})


def test_wrong_type_error_for_optional_names_both_alternatives() -> None:
    with pytest.raises(ConfigError, match="expected int or null, got 'many'"):
        build({"limit": "many"})


def test_wrong_type_error_for_literal_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="expected 'get' or 'head', got 'post'"):
        build({"mode": "post"})


def test_bool_is_not_accepted_for_int_field() -> None:
    with pytest.raises(ConfigError, match="retries: expected int, got True"):
        build({"retries": True})


def test_bool_is_not_accepted_for_float_field() -> None:
    with pytest.raises(ConfigError, match="timeout: expected float"):
        build({"timeout": False})


def test_int_is_accepted_for_float_field_and_widened() -> None:
    config = build({"timeout": 10})

    assert config.timeout == 10.0
    assert isinstance(config.timeout, float)


def test_number_is_not_accepted_for_str_field() -> None:
    with pytest.raises(ConfigError, match="url: expected str, got 8080"):
        build_config(WebConfig, {"url": 8080})


def test_strings_are_not_parsed_without_from_text() -> None:
    with pytest.raises(ConfigError, match="verify: expected bool, got 'true'"):
        build({"verify": "true"})


def test_enum_field_accepts_member_value() -> None:
    assert build({"color": "green"}).color is Color.GREEN


def test_enum_field_rejects_unknown_value() -> None:
    with pytest.raises(ConfigError, match="color: expected Color, got 'blue'"):
        build({"color": "blue"})


def test_dict_values_are_converted_to_value_type() -> None:
    weights = build({"weights": {"a": 1}}).weights

    assert weights == {"a": 1.0}
    assert isinstance(weights["a"], float)


def test_tuple_field_accepts_list_and_stores_tuple() -> None:
    config = build_config(TupleConfig, {"hosts": ["nas", "router"]})

    assert config.hosts == ("nas", "router")


def test_sequence_and_mapping_fields_accept_lists_and_dicts() -> None:
    config = build_config(AbstractCollectionsConfig, {"hosts": ["nas"], "limits": {"cpu": 90}})

    assert list(config.hosts) == ["nas"]
    assert dict(config.limits) == {"cpu": 90}


def test_validator_failure_is_config_error_naming_field() -> None:
    with pytest.raises(ConfigError) as info:
        build_config(ValidatedConfig, {"count": 0}, file="homelab.toml", table="plugins.web")

    assert info.value.file == "homelab.toml"
    assert info.value.table == "plugins.web"
    assert info.value.field == "count"


# --- from_text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("Yes", True),
        ("on", True),
        ("1", True),
        ("false", False),
        ("NO", False),
        ("off", False),
        (" 0 ", False),
    ],
)
def test_from_text_parses_bool_words(text: str, expected: bool) -> None:
    assert build({"verify": text}, from_text=True).verify is expected


def test_from_text_rejects_unknown_bool_word() -> None:
    with pytest.raises(ConfigError, match="verify: expected bool, got 'maybe'"):
        build({"verify": "maybe"}, from_text=True)


def test_from_text_parses_int() -> None:
    assert build({"retries": " 7 "}, from_text=True).retries == 7


def test_from_text_rejects_non_integer_text_for_int() -> None:
    with pytest.raises(ConfigError, match=r"retries: expected int, got '1\.5'"):
        build({"retries": "1.5"}, from_text=True)


def test_from_text_parses_float() -> None:
    assert build({"timeout": "2.5"}, from_text=True).timeout == 2.5


def test_from_text_parses_json_list() -> None:
    assert build({"ports": "[8080, 8443]"}, from_text=True).ports == [8080, 8443]


def test_from_text_parses_comma_separated_list_and_converts_items() -> None:
    assert build({"ports": "8080, 8443,"}, from_text=True).ports == [8080, 8443]


def test_from_text_comma_separated_list_strips_items() -> None:
    assert build({"tags": " home , lab "}, from_text=True).tags == ["home", "lab"]


def test_from_text_empty_string_is_empty_list() -> None:
    assert build({"tags": ""}, from_text=True).tags == []


def test_from_text_rejects_invalid_json_list() -> None:
    with pytest.raises(ConfigError, match="ports: expected list"):
        build({"ports": "[8080,"}, from_text=True)


def test_from_text_parses_json_dict() -> None:
    config = build({"headers": '{"Accept": "text/plain"}'}, from_text=True)

    assert config.headers == {"Accept": "text/plain"}


def test_from_text_rejects_invalid_json_dict() -> None:
    with pytest.raises(ConfigError, match="headers: expected dict"):
        build({"headers": "Accept=text/plain"}, from_text=True)


def test_from_text_parses_literal() -> None:
    assert build({"mode": "head"}, from_text=True).mode == "head"


def test_from_text_parses_enum_by_value() -> None:
    assert build({"color": "green"}, from_text=True).color is Color.GREEN


def test_from_text_parses_int_valued_enum_by_value() -> None:
    assert build_config(LevelConfig, {"level": "2"}, from_text=True).level is Level.HIGH


@pytest.mark.parametrize("text", ["", "null", "none"])
def test_from_text_null_words_give_none_for_optional(text: str) -> None:
    assert build({"limit": text}, from_text=True).limit is None


def test_from_text_optional_parses_inner_type() -> None:
    assert build({"limit": "10"}, from_text=True).limit == 10


def test_from_text_keeps_str_field_text_even_if_numeric() -> None:
    assert build({"token": "12345"}, from_text=True).token == "12345"


# --- secrets ------------------------------------------------------------------------------


def test_secret_fields_lists_fields_marked_secret() -> None:
    assert secret_fields(WebConfig) == {"token"}


def test_wrong_type_error_for_secret_shows_redacted_text_not_value() -> None:
    with pytest.raises(ConfigError) as info:
        build({"token": 987654321})

    assert "987654321" not in str(info.value)
    assert str(info.value) == f"token: expected str, got {REDACTED}"


def test_from_text_error_for_secret_shows_redacted_text_not_value() -> None:
    with pytest.raises(ConfigError) as info:
        build_config(PinConfig, {"pin": "hunter2"}, from_text=True)

    assert "hunter2" not in str(info.value)
    assert REDACTED in str(info.value)


def test_validator_failure_for_secret_does_not_echo_value() -> None:
    with pytest.raises(ConfigError) as info:
        build_config(ValidatedSecretConfig, {"token": "hunter2"})

    assert "hunter2" not in str(info.value)


def test_config_to_dict_redacts_secrets() -> None:
    data = config_to_dict(build({"token": "hunter2"}))

    assert data["token"] == REDACTED
    assert data["url"] == "http://nas.lan"


def test_config_to_dict_leaves_empty_secret_unredacted() -> None:
    assert config_to_dict(build({"token": ""}))["token"] == ""


def test_config_to_dict_with_redact_false_shows_secrets() -> None:
    assert config_to_dict(build({"token": "hunter2"}), redact=False)["token"] == "hunter2"


def test_config_to_dict_gives_enum_value() -> None:
    assert config_to_dict(build({"color": "green"}))["color"] == "green"


def test_config_to_dict_gives_tuple_as_list() -> None:
    assert config_to_dict(build_config(TupleConfig, {"hosts": ["nas"]})) == {"hosts": ["nas"]}


def test_config_to_dict_has_every_field() -> None:
    assert set(config_to_dict(build({}))) == {f.name for f in attrs.fields(WebConfig)}


def test_redact_mapping_redacts_only_non_empty_secret_keys() -> None:
    data = {"token": "hunter2", "password": "", "url": "http://nas.lan"}

    assert redact_mapping(data, {"token", "password"}) == {
        "token": REDACTED,
        "password": "",
        "url": "http://nas.lan",
    }


# --- schema -------------------------------------------------------------------------------


def test_config_schema_gives_json_types_of_fields() -> None:
    properties = config_schema(WebConfig)["properties"]

    assert properties["url"]["type"] == "string"
    assert properties["timeout"]["type"] == "number"
    assert properties["retries"]["type"] == "integer"
    assert properties["verify"]["type"] == "boolean"
    assert properties["ports"]["type"] == "array"
    assert properties["ports"]["items"] == {"type": "integer"}
    assert properties["headers"]["type"] == "object"
    assert properties["headers"]["additionalProperties"] == {"type": "string"}


def test_config_schema_gives_literal_and_enum_choices() -> None:
    properties = config_schema(WebConfig)["properties"]

    assert properties["mode"]["enum"] == ["get", "head"]
    assert properties["color"]["enum"] == ["red", "green"]


def test_config_schema_gives_optional_as_any_of_with_null() -> None:
    limit = config_schema(WebConfig)["properties"]["limit"]

    assert limit["anyOf"] == [{"type": "integer"}, {"type": "null"}]


def test_config_schema_lists_fields_without_default_as_required() -> None:
    assert config_schema(WebConfig)["required"] == ["url"]


def test_config_schema_has_no_required_key_when_all_fields_have_defaults() -> None:
    assert "required" not in config_schema(TupleConfig)


def test_config_schema_gives_plain_defaults() -> None:
    properties = config_schema(WebConfig)["properties"]

    assert properties["timeout"]["default"] == 5.0
    assert properties["proxy"]["default"] is None
    assert properties["color"]["default"] == "red"
    assert "default" not in properties["url"]


def test_config_schema_calls_factory_for_default() -> None:
    properties = config_schema(WebConfig)["properties"]

    assert properties["ports"]["default"] == [80, 443]
    assert properties["tags"]["default"] == []


def test_config_schema_gives_descriptions() -> None:
    properties = config_schema(WebConfig)["properties"]

    assert properties["url"]["description"] == "Address to probe."
    assert "description" not in properties["retries"]


def test_config_schema_marks_secret_fields() -> None:
    properties = config_schema(WebConfig)["properties"]

    assert properties["token"]["x-secret"] is True
    assert properties["token"]["writeOnly"] is True
    assert "x-secret" not in properties["url"]


def test_config_schema_is_a_closed_object() -> None:
    schema = config_schema(WebConfig)

    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False


def test_config_schema_of_no_config_has_no_properties() -> None:
    assert config_schema(NoConfig) == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }


# --- option() -----------------------------------------------------------------------------


def test_option_records_description_and_secret_in_metadata() -> None:
    token = attrs.fields(WebConfig).token

    assert token.metadata["description"] == "API token."
    assert token.metadata["secret"] is True


def test_option_with_factory_gives_each_instance_its_own_value() -> None:
    first = WebConfig(url="a")
    second = WebConfig(url="b")
    first.ports.append(8080)

    assert second.ports == [80, 443]


def test_option_with_factory_is_not_required() -> None:
    assert build_config(TupleConfig, {}).hosts == ()


# -- ranges and lengths declared on option() ----------------------------------------------


@attrs.define
class _Bounded:
    port: int = option(8080, description="A port.", minimum=1, maximum=65535)
    timeout: float = option(5.0, exclusive_minimum=0)
    ratio: float = option(0.5, minimum=0, exclusive_maximum=1)
    retries: int | None = option(None, minimum=0)
    name: str = option("x", min_length=1, max_length=8)
    hosts: list[str] = option(factory=lambda: ["a"], min_length=1)
    token: str = option("secret-token", secret=True, min_length=4, max_length=20)


def test_ranges_reach_the_schema() -> None:
    props = config_schema(_Bounded)["properties"]
    assert props["port"] == {
        "type": "integer",
        "description": "A port.",
        "minimum": 1,
        "maximum": 65535,
        "default": 8080,
    }
    assert props["timeout"]["exclusiveMinimum"] == 0
    assert (props["ratio"]["minimum"], props["ratio"]["exclusiveMaximum"]) == (0, 1)
    assert props["retries"]["minimum"] == 0
    assert (props["name"]["minLength"], props["name"]["maxLength"]) == (1, 8)
    assert props["hosts"]["minItems"] == 1 and "minLength" not in props["hosts"]
    assert props["token"]["writeOnly"] is True


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"port": 0}, "port", "'port' must be between 1 and 65535, got 0"),
        ({"port": 70000}, "port", "'port' must be between 1 and 65535, got 70000"),
        ({"timeout": 0}, "timeout", "'timeout' must be more than 0, got 0"),
        ({"ratio": 1}, "ratio", "'ratio' must be 0 or more and less than 1, got 1"),
        ({"retries": -1}, "retries", "'retries' must be 0 or more, got -1"),
        ({"name": ""}, "name", "'name' must have at least 1 character, got 0"),
        ({"name": "x" * 9}, "name", "'name' must have at most 8 characters, got 9"),
        ({"hosts": []}, "hosts", "'hosts' must have at least 1 item, got 0"),
    ],
)
def test_a_value_out_of_range_names_the_field_and_the_range(
    data: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(_Bounded, data, file="homelab.toml", table="plugins.x")
    assert (caught.value.table, caught.value.field, caught.value.reason) == (
        "plugins.x",
        field,
        message,
    )


def test_values_in_range_and_unset_optionals_are_accepted() -> None:
    config = build_config(_Bounded, {"port": 65535, "ratio": 0, "retries": None})
    assert (config.port, config.ratio, config.retries) == (65535, 0, None)


def test_a_range_runs_before_the_fields_own_validator() -> None:
    seen: list[int] = []

    @attrs.define
    class Both:
        n: int = option(1, minimum=1, validator=lambda _, __, v: seen.append(v))

    with pytest.raises(ConfigError, match="'n' must be 1 or more, got 0"):
        build_config(Both, {"n": 0})
    assert seen == []
    build_config(Both, {"n": 3})
    assert seen == [3]


def test_a_secret_out_of_range_is_not_shown() -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(_Bounded, {"token": "abc"})
    assert "abc" not in str(caught.value)
    assert caught.value.reason == "'token' must have at least 4 characters, got 3"


def test_bundled_plugins_declare_their_ranges_in_the_schema() -> None:
    from homelab_plugins.ping import PingConfig
    from homelab_plugins.tcp import TcpConfig

    tcp = config_schema(TcpConfig)["properties"]
    assert (tcp["port"]["minimum"], tcp["port"]["maximum"]) == (1, 65535)
    assert tcp["connect_timeout"]["exclusiveMinimum"] == 0
    ping = config_schema(PingConfig)["properties"]
    assert (ping["count"]["minimum"], ping["count"]["maximum"]) == (1, 100)


def test_settings_sections_declare_their_ranges_in_the_schema() -> None:
    from homelab_core.config import SchedulerSettings, ServerSettings

    server = config_schema(ServerSettings)["properties"]
    assert (server["port"]["minimum"], server["port"]["maximum"]) == (1, 65535)
    assert config_schema(SchedulerSettings)["properties"]["concurrency"]["minimum"] == 1

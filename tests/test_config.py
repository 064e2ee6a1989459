"""Settings: reading homelab.toml, validating its tables and HOMELAB_* overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from homelab_core.config import (
    DEFAULT_DATABASE_URL,
    InstanceSettings,
    Settings,
    load_settings,
)
from homelab_core.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "homelab.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path, text: str) -> ConfigError:
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    return info.value


# --- finding the file ---------------------------------------------------------------------


def test_no_file_gives_embedded_defaults_with_system_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    settings = load_settings(environ={})

    assert settings == Settings.default()
    assert settings.plugins == {"system": InstanceSettings(id="system", type="system")}
    assert settings.source is None
    assert settings.server.port == 8765
    assert settings.database.url == DEFAULT_DATABASE_URL


def test_homelab_toml_in_working_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "[server]\nport = 9100\n")
    monkeypatch.chdir(tmp_path)

    settings = load_settings(environ={})

    assert settings.server.port == 9100
    assert settings.source == "homelab.toml"


def test_file_without_plugins_section_has_no_instances(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[server]\nport = 9100\n"), environ={})

    assert settings.plugins == {}


def test_source_is_the_path_of_the_file_read(tmp_path: Path) -> None:
    path = write(tmp_path, "")

    assert load_settings(path, environ={}).source == str(path)


def test_explicit_missing_file_raises_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(ConfigError, match="does not exist") as info:
        load_settings(missing, environ={})

    assert str(missing) in str(info.value)


def test_homelab_config_env_var_picks_the_file(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text("[server]\nport = 9200\n", encoding="utf-8")

    settings = load_settings(environ={"HOMELAB_CONFIG": str(path)})

    assert settings.server.port == 9200
    assert settings.source == str(path)


def test_homelab_config_env_var_naming_missing_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={"HOMELAB_CONFIG": str(tmp_path / "nope.toml")})


def test_explicit_path_wins_over_homelab_config_env_var(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9300\n")

    settings = load_settings(path, environ={"HOMELAB_CONFIG": str(tmp_path / "nope.toml")})

    assert settings.server.port == 9300


def test_load_settings_reads_process_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOMELAB_SERVER_PORT", "9400")

    assert load_settings(write(tmp_path, "")).server.port == 9400


# --- file contents ------------------------------------------------------------------------


def test_invalid_toml_raises_config_error_naming_file(tmp_path: Path) -> None:
    path = tmp_path / "homelab.toml"

    error = config_error(path, "[server\nport = 1\n")

    assert error.file == str(path)
    assert str(error).startswith(f"{path}: not valid TOML")


def test_file_that_is_not_utf8_raises_config_error_naming_file(tmp_path: Path) -> None:
    path = tmp_path / "homelab.toml"
    path.write_bytes(b'[server]\nhost = "\xff"\n')

    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})

    assert info.value.file == str(path)


def test_sections_are_read_from_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [server]
        host = "0.0.0.0"
        auth = "all"
        [database]
        url = "postgres://db/homelab"
        [retention]
        raw_days = 3
        [scheduler]
        setup_retry = [1, 2.5]
        [store]
        batch_size = 100
        """,
    )

    settings = load_settings(path, environ={})

    assert settings.server.host == "0.0.0.0"
    assert settings.server.auth == "all"
    assert settings.database.url == "postgres://db/homelab"
    assert settings.retention.raw_days == 3.0
    assert settings.scheduler.setup_retry == [1.0, 2.5]
    assert settings.store.batch_size == 100


def test_unknown_section_error_names_file_and_section(tmp_path: Path) -> None:
    path = tmp_path / "homelab.toml"

    error = config_error(path, "[sever]\nport = 1\n")

    assert (error.file, error.table) == (str(path), "sever")
    assert "unknown section" in error.reason
    assert "server" in error.reason


def test_unknown_key_in_fixed_section_error_names_file_table_and_field(tmp_path: Path) -> None:
    path = tmp_path / "homelab.toml"

    error = config_error(path, "[server]\nprot = 1\n")

    assert (error.file, error.table, error.field) == (str(path), "server", "prot")


def test_wrong_type_for_server_port_error_names_file_table_and_field(tmp_path: Path) -> None:
    path = tmp_path / "homelab.toml"

    error = config_error(path, '[server]\nport = "http"\n')

    assert (error.file, error.table, error.field) == (str(path), "server", "port")
    assert str(error) == f"{path} [server] port: expected int, got 'http'"


def test_section_that_is_not_a_table_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "homelab.toml"

    error = config_error(path, "server = 8080\n")

    assert (error.table, error.reason) == ("server", "must be a table")


def test_server_auth_outside_its_choices_is_rejected(tmp_path: Path) -> None:
    error = config_error(tmp_path / "homelab.toml", '[server]\nauth = "none"\n')

    assert (error.table, error.field) == ("server", "auth")


# --- [plugins.<id>] -----------------------------------------------------------------------


def test_plugin_type_defaults_to_instance_id(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[plugins.system]\n"), environ={})

    assert settings.plugins == {"system": InstanceSettings(id="system", type="system")}


def test_plugin_type_can_be_given(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, '[plugins.nas]\ntype = "http"\n'), environ={})

    assert settings.plugins["nas"].type == "http"


def test_plugin_type_that_is_not_text_is_rejected(tmp_path: Path) -> None:
    error = config_error(tmp_path / "homelab.toml", "[plugins.nas]\ntype = 3\n")

    assert (error.table, error.field) == ("plugins.nas", "type")


def test_plugin_enabled_defaults_to_true(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[plugins.nas]\n"), environ={})

    assert settings.plugins["nas"].enabled is True


def test_plugin_enabled_false_is_read(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[plugins.nas]\nenabled = false\n"), environ={})

    assert settings.plugins["nas"].enabled is False


def test_plugin_enabled_that_is_not_bool_error_names_table_and_field(tmp_path: Path) -> None:
    path = tmp_path / "homelab.toml"

    error = config_error(path, '[plugins.nas]\nenabled = "yes"\n')

    assert (error.file, error.table, error.field) == (str(path), "plugins.nas", "enabled")
    assert str(error).startswith(f"{path} [plugins.nas] enabled: expected true or false")


def test_plugin_interval_and_timeout_are_floats(tmp_path: Path) -> None:
    path = write(tmp_path, "[plugins.nas]\ninterval = 30\ntimeout = 2.5\n")

    instance = load_settings(path, environ={}).plugins["nas"]

    assert (instance.interval, instance.timeout) == (30.0, 2.5)
    assert isinstance(instance.interval, float)


def test_plugin_interval_and_timeout_default_to_none(tmp_path: Path) -> None:
    instance = load_settings(write(tmp_path, "[plugins.nas]\n"), environ={}).plugins["nas"]

    assert (instance.interval, instance.timeout) == (None, None)


@pytest.mark.parametrize("field", ["interval", "timeout"])
def test_plugin_duration_that_is_bool_is_rejected(tmp_path: Path, field: str) -> None:
    error = config_error(tmp_path / "homelab.toml", f"[plugins.nas]\n{field} = true\n")

    assert (error.table, error.field) == ("plugins.nas", field)
    assert error.reason == "expected a positive number of seconds, got True"


@pytest.mark.parametrize("field", ["interval", "timeout"])
@pytest.mark.parametrize("value", ["0", "-5", "-0.5"])
def test_plugin_duration_that_is_not_positive_is_rejected(
    tmp_path: Path, field: str, value: str
) -> None:
    path = tmp_path / "homelab.toml"

    error = config_error(path, f"[plugins.nas]\n{field} = {value}\n")

    assert str(error).startswith(f"{path} [plugins.nas] {field}: expected a positive number")


def test_plugin_interval_that_is_text_is_rejected(tmp_path: Path) -> None:
    error = config_error(tmp_path / "homelab.toml", '[plugins.nas]\ninterval = "30s"\n')

    assert (error.table, error.field) == ("plugins.nas", "interval")


def test_plugin_interval_that_is_nan_is_rejected(tmp_path: Path) -> None:
    error = config_error(tmp_path / "homelab.toml", "[plugins.nas]\ninterval = nan\n")

    assert (error.table, error.field) == ("plugins.nas", "interval")


@pytest.mark.parametrize("instance_id", ["NAS", "1nas", "nas box", "nas.box", "_nas"])
def test_instance_id_that_is_not_a_slug_is_rejected(tmp_path: Path, instance_id: str) -> None:
    error = config_error(tmp_path / "homelab.toml", f'[plugins."{instance_id}"]\n')

    assert error.table == f"plugins.{instance_id}"
    assert "lowercase slug" in error.reason


def test_instance_id_with_trailing_newline_is_rejected(tmp_path: Path) -> None:
    error = config_error(tmp_path / "homelab.toml", '[plugins."nas\\n"]\n')

    assert "lowercase slug" in error.reason


def test_instance_id_with_digits_dashes_and_underscores_is_accepted(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[plugins.nas-2_b]\n"), environ={})

    assert list(settings.plugins) == ["nas-2_b"]


def test_plugin_entry_that_is_not_a_table_is_rejected(tmp_path: Path) -> None:
    error = config_error(tmp_path / "homelab.toml", "[plugins]\nnas = 3\n")

    assert (error.table, error.reason) == ("plugins.nas", "must be a table")


def test_plugins_that_is_not_a_table_is_rejected(tmp_path: Path) -> None:
    error = config_error(tmp_path / "homelab.toml", "plugins = 3\n")

    assert error.table == "plugins"


def test_other_plugin_keys_land_in_options(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [plugins.nas]
        type = "http"
        enabled = true
        interval = 10
        timeout = 5
        url = "http://nas.lan"
        ports = [80, 443]
        """,
    )

    instance = load_settings(path, environ={}).plugins["nas"]

    assert instance.options == {"url": "http://nas.lan", "ports": [80, 443]}


def test_instances_keep_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, "[plugins.zeta]\n[plugins.alpha]\n")

    assert list(load_settings(path, environ={}).plugins) == ["zeta", "alpha"]


# --- environment overrides ----------------------------------------------------------------


def test_env_server_port_is_parsed_as_int(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), environ={"HOMELAB_SERVER_PORT": "9000"})

    assert settings.server.port == 9000


def test_env_overrides_value_from_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9100\nhost = '0.0.0.0'\n")

    settings = load_settings(path, environ={"HOMELAB_SERVER_PORT": "9000"})

    assert (settings.server.port, settings.server.host) == (9000, "0.0.0.0")


def test_env_api_token_short_form_stays_text_when_numeric(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), environ={"HOMELAB_API_TOKEN": "12345"})

    assert settings.server.api_token == "12345"


def test_env_server_api_token_stays_text_when_numeric(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), environ={"HOMELAB_SERVER_API_TOKEN": "12345"})

    assert settings.server.api_token == "12345"


def test_env_api_token_overrides_token_from_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\napi_token = "from-file"\n')

    settings = load_settings(path, environ={"HOMELAB_API_TOKEN": "from-env"})

    assert settings.server.api_token == "from-env"


def test_env_text_field_keeps_value_that_looks_like_toml(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), environ={"HOMELAB_SERVER_HOST": "true"})

    assert settings.server.host == "true"


def test_env_list_value_is_parsed_as_toml(tmp_path: Path) -> None:
    env = {"HOMELAB_SCHEDULER_SETUP_RETRY": "[1, 2.5]"}

    assert load_settings(write(tmp_path, ""), environ=env).scheduler.setup_retry == [1.0, 2.5]


def test_env_value_of_wrong_type_error_names_table_and_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, ""), environ={"HOMELAB_SERVER_PORT": "http"})

    assert (info.value.table, info.value.field) == ("server", "port")


def test_env_variables_without_homelab_prefix_are_ignored(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), environ={"SERVER_PORT": "1", "PORT": "2"})

    assert settings.server.port == 8765


def test_env_plugin_option_creates_instance_with_raw_text(tmp_path: Path) -> None:
    env = {"HOMELAB_PLUGINS__WEB__URL": "http://nas.lan"}

    settings = load_settings(write(tmp_path, ""), environ=env)

    assert settings.plugins["web"] == InstanceSettings(
        id="web",
        type="web",
        options={"url": "http://nas.lan"},
        from_environment={"url": "HOMELAB_PLUGINS__WEB__URL"},
    )


def test_env_plugin_option_stays_text_even_if_numeric(tmp_path: Path) -> None:
    env = {"HOMELAB_PLUGINS__WEB__PORT": "8080"}

    settings = load_settings(write(tmp_path, ""), environ=env)

    assert settings.plugins["web"].options == {"port": "8080"}


def test_env_plugin_option_overrides_file_option_and_keeps_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, '[plugins.web]\ntype = "http"\nurl = "http://a"\nverify = false\n')
    env = {"HOMELAB_PLUGINS__WEB__URL": "http://b"}

    instance = load_settings(path, environ=env).plugins["web"]

    assert instance.type == "http"
    assert instance.options == {"url": "http://b", "verify": False}


def test_env_plugin_interval_is_parsed_as_number(tmp_path: Path) -> None:
    env = {"HOMELAB_PLUGINS__WEB__INTERVAL": "30"}

    assert load_settings(write(tmp_path, ""), environ=env).plugins["web"].interval == 30.0


def test_env_plugin_enabled_is_parsed_as_bool(tmp_path: Path) -> None:
    path = write(tmp_path, "[plugins.web]\n")
    env = {"HOMELAB_PLUGINS__WEB__ENABLED": "false"}

    assert load_settings(path, environ=env).plugins["web"].enabled is False


def test_env_plugin_interval_that_is_not_a_number_is_rejected(tmp_path: Path) -> None:
    env = {"HOMELAB_PLUGINS__WEB__INTERVAL": "soon"}

    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, ""), environ=env)

    assert (info.value.table, info.value.field) == ("plugins.web", "interval")


def test_env_plugin_instance_id_and_key_are_lowercased(tmp_path: Path) -> None:
    env = {"HOMELAB_PLUGINS__Web__Url": "http://nas.lan"}

    settings = load_settings(write(tmp_path, ""), environ=env)

    assert settings.plugins["web"].options == {"url": "http://nas.lan"}


def test_an_error_in_a_value_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, ""), environ={"HOMELAB_SERVER_PORT": "high"})
    assert str(info.value).endswith(
        "[server] port: expected int, got 'high' (set by $HOMELAB_SERVER_PORT)"
    )


def test_settings_are_range_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "[store]\nqueue_size = 0\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert (info.value.table, info.value.field) == ("store", "queue_size")
    assert "'queue_size' must be 1 or more, got 0" in str(info.value)


def test_an_unsupported_database_url_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\nurl = "mysql://db/x"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert (info.value.table, info.value.field) == ("database", "url")
    assert "starting with one of sqlite://, postgres://" in str(info.value)
    assert "got 'mysql'" in str(info.value)


def test_psycopg_urls_are_refused_since_the_store_speaks_asyncpg(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\nurl = "psycopg://u@h/db"\n')
    with pytest.raises(ConfigError, match="got 'psycopg'"):
        load_settings(path, environ={})


# -- nodes ----------------------------------------------------------------------------------


def test_an_instance_may_be_pinned_to_a_node(tmp_path: Path) -> None:
    path = write(tmp_path, '[plugins.nas]\ntype = "system"\nnode = "nas-box"\n')

    instance = load_settings(path, environ={}).plugins["nas"]

    assert instance.node == "nas-box"
    assert "node" not in instance.options


@pytest.mark.parametrize("node", ['"NAS"', "3", '""', '"a b"'])
def test_a_pin_that_is_not_a_node_name_names_the_field(tmp_path: Path, node: str) -> None:
    error = config_error(tmp_path / "homelab.toml", f"[plugins.nas]\nnode = {node}\n")

    assert (error.table, error.field) == ("plugins.nas", "node")
    assert "node name" in error.reason


def test_the_node_name_defaults_to_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from homelab_core.config import NodeSettings

    monkeypatch.setattr("socket.gethostname", lambda: "Pi4.lan")
    assert NodeSettings().node_name == "pi4"
    monkeypatch.setattr("socket.gethostname", lambda: "42_Box")
    assert NodeSettings().node_name == "node-42_box"
    assert NodeSettings(name="nas").node_name == "nas"


def test_redis_urls_are_checked(tmp_path: Path) -> None:
    error = config_error(tmp_path / "homelab.toml", '[bus]\nbackend = "redis"\nurl = "http://x"\n')

    assert (error.table, error.field) == ("bus", "url")
    assert "redis://host:port/db" in error.reason

"""``homelab schema``: a JSON Schema of homelab.toml that every example in the docs passes
and that rejects what ``homelab check-config`` would."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from homelab_core import PluginManager
from homelab_core.cli import cli
from homelab_core.config import _INSTANCE_KEYS
from homelab_core.toml_schema import DRAFT, manager_schema, toml_schema

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
_FENCE = re.compile(r"^```toml[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _not_a_settings_file(block: str) -> bool:
    """A pyproject.toml excerpt or a .taplo.toml in a doc is not a homelab.toml."""
    return any(mark in block for mark in ("[project", "[build-system]", "[tool.", "[[rule]]"))


def toml_examples() -> list[tuple[str, str]]:
    """Every TOML block of docs/*.md and examples/ (files and blocks of their READMEs)."""
    found = []
    for path in sorted([*DOCS.glob("*.md"), *EXAMPLES.rglob("*.md")]):
        for index, block in enumerate(_FENCE.findall(path.read_text(encoding="utf-8"))):
            if not _not_a_settings_file(block):
                found.append((f"{path.relative_to(ROOT)}#{index}", block))
    for path in sorted(EXAMPLES.rglob("*.toml")):
        text = path.read_text(encoding="utf-8")
        if not _not_a_settings_file(text):
            found.append((str(path.relative_to(ROOT)), text))
    return found


@pytest.fixture(scope="module")
def manager() -> PluginManager:
    """The installed types, plus the tutorial's ``dice`` type that the docs configure."""
    import importlib.util
    import sys

    manager = PluginManager()
    if "dice" not in manager.plugin_types():
        path = EXAMPLES / "homelab-dice" / "homelab_dice" / "__init__.py"
        spec = importlib.util.spec_from_file_location("_schema_homelab_dice", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        manager.register(module, name="docs-example")
    return manager


@pytest.fixture(scope="module")
def validator(manager: PluginManager) -> jsonschema.Draft202012Validator:
    schema = manager_schema(manager)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator: jsonschema.Draft202012Validator, data: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)
    ]


def test_the_docs_have_toml_examples() -> None:
    assert len(toml_examples()) >= 10


@pytest.mark.parametrize(("where", "block"), toml_examples(), ids=[w for w, _ in toml_examples()])
def test_every_toml_example_validates(
    where: str, block: str, validator: jsonschema.Draft202012Validator
) -> None:
    assert _errors(validator, tomllib.loads(block)) == []


def test_the_schema_is_draft_2020_12_and_names_every_section(manager: PluginManager) -> None:
    schema = manager_schema(manager)
    assert schema["$schema"] == DRAFT
    assert set(schema["properties"]) == {
        "server",
        "database",
        "cache",
        "bus",
        "node",
        "retention",
        "scheduler",
        "store",
        "status_page",
        "mqtt",
        "plugins",
        "alerting",
        "alerts",
        "notifiers",
        "routes",
        "maintenance",
    }
    server = schema["properties"]["server"]["properties"]
    assert (server["port"]["minimum"], server["port"]["maximum"]) == (1, 65535)
    assert server["api_token"]["writeOnly"] is True
    http = schema["$defs"]["plugin.http"]["properties"]
    assert http["method"]["enum"][0] == "GET"
    assert http["password"]["writeOnly"] is True
    assert http["request_timeout"]["exclusiveMinimum"] == 0
    assert "for" in schema["$defs"]["rule"]["properties"]
    assert "for_" not in schema["$defs"]["rule"]["properties"]
    assert "id" not in schema["$defs"]["route"]["properties"]
    framework = set(schema["$defs"]["plugin_instance"]["properties"])
    assert framework == _INSTANCE_KEYS, "the instance keys of config.py"


GOOD = """
[server]
port = 8080

[plugins.system]

[plugins.web]
type = "http"
url = "https://example.org"
interval = 30
request_timeout = 5

[alerting]
group_wait = "30s"

[alerts.slow]
metric = "http.response_time"
op = ">"
threshold = 2.5
for = "5m"
notifiers = ["phone"]

[notifiers.phone]
type = "ntfy"
topic = "homelab-alerts-x7"
timeout = 5

[routes.all]
notifiers = ["phone"]
group_wait = 10

[maintenance.nightly]
cron = "0 3 * * *"
duration = "1h"
"""


def test_a_whole_file_validates(validator: jsonschema.Draft202012Validator) -> None:
    assert _errors(validator, tomllib.loads(GOOD)) == []


def _broken(change: str) -> dict[str, Any]:
    return tomllib.loads(GOOD + change)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ("[serverr]\nport = 1\n", ""),  # an unknown section
        ("[plugins.nas]\ntype = 'tcp'\nhost = 'nas'\nport = 'ssh'\n", "plugins/nas/port"),
        ("[plugins.nas]\ntype = 'tcp'\nhost = 'nas'\nport = 70000\n", "plugins/nas/port"),
        ("[plugins.nas]\ntype = 'tcp'\nhost = 'nas'\nport = 22\ncolour = 1\n", "plugins/nas"),
        ("[plugins.nas]\ntype = 'tcp'\nport = 22\n", "plugins/nas"),  # host is required
        ("[plugins.nas]\ntype = 'nope'\n", "plugins/nas/type"),  # not an installed type
        ("[plugins.nas]\nhost = 'nas'\n", "plugins/nas"),  # no type, and nas is no type
        ("[plugins.tcp]\nhost = 'nas'\nport = 'x'\n", "plugins/tcp/port"),  # type: the id
        ("[plugins.nas]\ntype = 'tcp'\nhost = 'nas'\nport = 22\ninterval = 0\n", ""),
        ("[alerts.bad]\nop = '=>'\nthreshold = 1\n", "alerts/bad/op"),
        ("[alerts.bad]\nthreshold = 1\nfor = 'soon'\n", "alerts/bad/for"),
        ("[alerts.bad]\nthreshold = 1\nfor_ = 5\n", "alerts/bad"),
        ("[alerts.bad]\nmetric = 'x'\n", "alerts/bad"),  # a value rule needs a threshold
        ("[notifiers.mail]\ntype = 'ntfy'\nto = ['a@b.c']\ntopic = 't'\n", "notifiers/mail"),
        ("[notifiers.mail]\ntype = 'carrier-pigeon'\n", "notifiers/mail/type"),
        ("[notifiers.mail]\ntype = 'email'\nhost = 'smtp'\n", "notifiers/mail"),
        ("[routes.r]\ngroup_wait = 10\n", "routes/r"),  # notifiers is required
        ("[maintenance.m]\ncron = '* * * * *'\n", "maintenance/m"),  # duration required
        ("[plugins.Bad]\ntype = 'system'\n", "plugins"),  # ids are slugs
    ],
)
def test_a_broken_file_is_rejected(
    change: str, where: str, validator: jsonschema.Draft202012Validator
) -> None:
    data = _broken(change)
    errors = list(validator.iter_errors(data))
    assert errors, f"accepted: {change!r}"
    paths = {"/".join(map(str, e.absolute_path)) for e in errors}
    paths |= {
        "/".join(map(str, e.absolute_path)) for error in errors for e in (error.context or [])
    }
    assert where in paths or any(p.startswith(where) for p in paths), paths


def test_homelab_schema_prints_it_and_writes_it(tmp_path: Path) -> None:
    printed = CliRunner().invoke(cli, ["schema"])
    assert printed.exit_code == 0, printed.output
    schema = json.loads(printed.stdout)
    assert schema["$schema"] == DRAFT
    assert "plugin.tcp" in schema["$defs"] and "notifier.webhook" in schema["$defs"]
    target = tmp_path / "homelab.schema.json"
    written = CliRunner().invoke(cli, ["schema", "--output", str(target)])
    assert written.exit_code == 0, written.output
    assert json.loads(target.read_text(encoding="utf-8")) == schema


def test_no_installed_types_still_give_a_valid_schema() -> None:
    schema = toml_schema({}, {})
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert _errors(validator, {"server": {"port": 1}}) == []
    assert _errors(validator, {"plugins": {"x": {"type": "y"}}}) == []

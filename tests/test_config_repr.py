"""A plugin's config object never shows its secrets: repr(), str(), a log line of it."""

from __future__ import annotations

import logging

import attrs
import pytest

from homelab_core import option
from homelab_core.options import build_config


@attrs.define
class Config:
    url: str = option("http://bob:hunter22@nas.local/", description="The URL.")
    api_token: str = option("", description="A token.", secret=True)
    headers: dict[str, str] = option(factory=dict, description="Headers.", secret=True)
    retries: int = option(3, description="Retries.")


def test_repr_and_str_of_a_config_hide_its_secrets() -> None:
    config = build_config(Config, {"api_token": "s3cr3t-token", "headers": {"X-Key": "k3y-value"}})
    for shown in (repr(config), str(config), f"{config}", f"{config!r}"):
        assert "s3cr3t-token" not in shown, shown
        assert "k3y-value" not in shown, shown
        assert "hunter22" not in shown, shown  # a URL's password too
        assert "retries=3" in shown and "X-Key" in shown, shown  # the rest as it is
    assert config.api_token == "s3cr3t-token"  # the value itself is untouched


def test_a_plugin_logging_its_config_leaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    config = build_config(Config, {"api_token": "s3cr3t-token"})
    logging.getLogger("some.plugin").warning("config: %s", config)
    assert "s3cr3t-token" not in caplog.text and "hunter22" not in caplog.text, caplog.text

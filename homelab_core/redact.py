"""Keeping secrets out of every text the framework shows or stores.

Two kinds of secret are removed, by one function each:

- credentials in URLs (:func:`redact_urls`), in any text: ``scheme://user:password@host``
  becomes ``scheme://user:**********@host``, and user information without a password
  (``https://TOKEN@host``, the form of many access tokens) becomes
  ``scheme://**********@host``, since a user name cannot be told from a token;
- the values of an instance's secret options (a :class:`Redactor` made from
  :func:`~homelab_core.options.secret_values`), wherever a plugin put them: an exception
  text, a health message, a log line.

The framework applies them where plugin texts enter it (the runner, for execution errors
and health reports; the plugin's logger) and where a config leaves it
(:func:`~homelab_core.options.config_to_dict`, configuration errors, the store's URL), so
that the REST API, the WebSocket stream, the database, the log and ``homelab run`` all
get the redacted text. The config itself (``homelab.toml``, the environment, the plugin
object) keeps the real values: the plugin needs them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

#: What a secret is replaced with.
REDACTED = "**********"
#: Shortest value of a secret option that is redacted from free text. A shorter value (a
#: header "1", say, in a header map marked secret as a whole) would turn up inside
#: ordinary words; config output masks it all the same.
MIN_SECRET_LENGTH = 4

# A scheme, then the whole authority of a URL (up to the first character that ends one or
# can never be part of one). The authority is matched without backtracking and the user
# information is the part before its last "@", as urllib.parse.urlsplit reads it; a
# scheme is at most 32 characters, so scanning any text stays linear.
_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,31}://([^\s/?#\"<>`\\{}|^]*)")


def _redact_authority(match: re.Match[str]) -> str:
    authority = match.group(1)
    userinfo, at, host = authority.rpartition("@")
    if not at or not userinfo:
        return match.group(0)
    user, colon, password = userinfo.partition(":")
    if colon and not password:
        return match.group(0)
    hidden = f"{user}:{REDACTED}" if colon else REDACTED
    start = match.start(1) - match.start(0)
    return f"{match.group(0)[:start]}{hidden}@{host}"


def redact_urls(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by :data:`REDACTED`.

    Only URLs with a scheme (``name://``) are recognised; an e-mail address or
    ``user:pass@host`` without a scheme is left as it is. Redacting twice changes nothing.
    """
    if "@" not in text or "://" not in text:
        return text
    return _AUTHORITY.sub(_redact_authority, text)


def url_secrets(text: str) -> list[str]:
    """The passwords of the URLs in ``text``, as written and percent-decoded.

    Used to add the password of a URL option to an instance's secrets, so that it is
    redacted from texts that show it without its URL.
    """
    found: list[str] = []
    if "@" not in text or "://" not in text:
        return found
    for match in _AUTHORITY.finditer(text):
        try:
            password = urlsplit(match.group(0)).password
        except ValueError:
            continue
        if password:
            found += {password, unquote(password)}
    return found


class Redactor:
    """Removes a set of secret values, and the credentials of URLs, from texts.

    :param secrets: the literal values to remove; those shorter than
        :data:`MIN_SECRET_LENGTH` characters are left (see there). The longest match wins,
        so a secret that contains another is removed whole.
    """

    __slots__ = ("_pattern",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, values))) if values else None

    def __bool__(self) -> bool:
        """Whether there are literal secrets to remove (URLs are redacted regardless)."""
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        """``text`` without the secrets and without credentials in URLs."""
        if self._pattern is not None:
            text = self._pattern.sub(REDACTED, text)
        return redact_urls(text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's message (and its traceback) in place.

    Attached to a plugin instance's own logger, so that a plugin that logs its URL or
    token does not write the secret to the log.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format: left to the handler, which reports it
            return True
        redacted = self.redactor(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and record.exc_info[1] is not None:
            formatted = logging.Formatter().formatException(record.exc_info)
            text = self.redactor(formatted)
            if text != formatted:
                record.exc_info, record.exc_text = None, text
        return True


def install_filter(logger: logging.Logger, redactor: Redactor) -> None:
    """Make ``logger`` redact with ``redactor``, replacing a filter installed before.

    Loggers live as long as the process, and an instance's logger is shared by every plugin
    object made for that id (the hub's, ``homelab run``'s, a test's): one filter, the last.
    """
    for old in [f for f in logger.filters if isinstance(f, RedactingFilter)]:
        logger.removeFilter(old)
    logger.addFilter(RedactingFilter(redactor))

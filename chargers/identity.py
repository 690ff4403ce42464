"""The charge point identity in the websocket URL: one grammar, checked at the handshake.

OCPP-J 1.6 §3.1.1: the connection URL is the endpoint URL + "/" + the identity,
percent-encoded as RFC 3986 requires. The identity is what the charger also sends as
the HTTP Basic user (§6.2.2). The spec gives no alphabet; this project accepts

- 1 to 48 characters after ONE percent-decoding of the raw path (48 is the column, and
  OCPP 2.0.1's identity limit), valid UTF-8;
- printable US-ASCII only (0x20–0x7E; §4.1.2 keeps non-ASCII for natural-language text),
  no leading or trailing space;
- none of `/` (a path separator, even encoded as %2F), `?` and `#` (URL delimiters),
  `%` (an identity that still contains an escape after decoding is how double-decoding
  attacks start: %252F), `\\`;
- not `.` or `..` (path segments with a meaning of their own).

A query string is refused too: the identity is the last path segment, and `CP1?x=1`
must not quietly become `CP1`. Identities are CiStrings: they are looked up without
regard to case.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

IDENTITY_MAX_LENGTH = 48
_FORBIDDEN = frozenset("/?#%\\")
_PREFIX = b"/ocpp/"


class BadIdentity(ValueError):
    """The handshake's path does not carry a valid charge point identity."""


def identity_from_path(raw_path: bytes, query_string: bytes = b"") -> str:
    """The identity in `raw_path` (`/ocpp/<identity>[/]`, still percent-encoded), or BadIdentity."""
    if query_string:
        raise BadIdentity("a query string is not part of an OCPP-J connection URL")
    if not raw_path.startswith(_PREFIX):
        raise BadIdentity("the path is not /ocpp/<charge point id>")
    segment = raw_path[len(_PREFIX):]
    if segment.endswith(b"/"):
        segment = segment[:-1]
    try:
        identity = unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise BadIdentity("the charge point id is not UTF-8") from None
    check_identity(identity)
    return identity


def check_identity(identity: str) -> None:
    """Raise BadIdentity unless `identity` follows the grammar in the module docstring."""
    if not identity:
        raise BadIdentity("the charge point id is empty")
    if len(identity) > IDENTITY_MAX_LENGTH:
        raise BadIdentity(f"the charge point id is longer than {IDENTITY_MAX_LENGTH} characters")
    if not all(" " <= char <= "~" for char in identity):
        raise BadIdentity("the charge point id has characters other than printable ASCII")
    if identity != identity.strip(" "):
        raise BadIdentity("the charge point id starts or ends with a space")
    if _FORBIDDEN.intersection(identity):
        raise BadIdentity("the charge point id contains / ? # % or \\")
    if identity in {".", ".."}:
        raise BadIdentity("the charge point id is . or ..")


def printable(value: str, limit: int = 60) -> str:
    """`value` safe for one log line: escaped, cut to `limit` characters."""
    shown = value.encode("unicode_escape", "backslashreplace").decode("ascii")
    return shown if len(shown) <= limit else shown[:limit] + "…"

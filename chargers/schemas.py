"""Compiled validators of the official OCPP 1.6 JSON schemas (those the `ocpp` package ships).

The `ocpp` library validates each payload with `jsonschema` in a thread-pool hop, twice per
frame (the request and our answer): the hot path's largest cost after the database. Here
each schema is compiled once per process by `fastjsonschema` into a plain Python function
(~10 µs for a MeterValues of 5 samples) that runs on the event loop, never on the database
thread. Compiled as the library reads them: Draft 4, `format` not checked (the library
passes no format checker; timestamps are parsed by the handlers), no defaults filled in,
`multipleOf` checked in decimal (fastjsonschema divides `Decimal(repr(x))`, so 21.4 is a
multiple of 0.1, as the library's Decimal re-parse makes it).

`compile_all()` builds every validator the central system uses (the consumer calls it at
import, so a Daphne process never compiles on a charger's frame); a validator asked for
before that is compiled on first use and kept. Generating and compiling the 56 validators
took ~0.1 s of every process start (a tenth of a web process's, which a reconnect storm's
chargers wait for): their compiled code is kept in the package's `__pycache__`, where Python
keeps its own, keyed by the schemas, fastjsonschema's version and the interpreter's bytecode
magic, and loaded in ~1 ms; written like Python's bytecode (not when PYTHONDONTWRITEBYTECODE
is set: the install step writes it then, evce/precompile.py). A cache that cannot be read or
written is only slower.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import marshal
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import CodeType

import fastjsonschema
import ocpp

logger = logging.getLogger(__name__)

SCHEMA_DIR = Path(ocpp.__file__).resolve().parent / "v16" / "schemas"
CACHE_DIR = Path(__file__).resolve().parent / "__pycache__"
# As the ocpp library validates: no defaults filled in, no `format` checked (part of the cache key).
_USE_DEFAULT = _USE_FORMATS = False

CALL, CALLRESULT = 2, 3

# The schema keyword that failed → OCPP-J 1.6 error code (§4.2.3 table 7): a value of the
# wrong type (or too long for its CiString type) → TypeConstraintViolation, a missing field
# → ProtocolError ("incomplete"), an unknown field → FormationViolation ("syntactically
# incorrect"), too few/many items → OccurenceConstraintViolation, a value outside what its
# field allows → PropertyConstraintViolation.
ERROR_CODES = {
    "type": "TypeConstraintViolation",
    "maxLength": "TypeConstraintViolation",
    "required": "ProtocolError",
    "additionalProperties": "FormationViolation",
    "minItems": "OccurenceConstraintViolation",
    "maxItems": "OccurenceConstraintViolation",
    "enum": "PropertyConstraintViolation",
    "minimum": "PropertyConstraintViolation",
    "maximum": "PropertyConstraintViolation",
    "pattern": "PropertyConstraintViolation",
    "minLength": "PropertyConstraintViolation",
    "multipleOf": "PropertyConstraintViolation",
}
_DESCRIPTION_MAX = 200

Validator = Callable[[object], object]
_validators: dict[str, Validator] = {}


@dataclass(frozen=True)
class SchemaProblem:
    """The first schema rule a payload breaks, as an OCPP-J error code and a short text."""

    code: str
    description: str


def schema_name(message_type: int, action: str) -> str:
    """The file name (without .json) of `action`'s request (CALL) or answer (CALLRESULT) schema."""
    return action + "Response" if message_type == CALLRESULT else action


def validator(name: str) -> Validator:
    """The compiled validator of schema `name` (e.g. "MeterValues", "ResetResponse")."""
    compiled = _validators.get(name)
    if compiled is None:
        compiled = _validators[name] = _function(_code(name, _schema_text(name)))
    return compiled


def compile_all(actions: Iterable[str], *, keep: bool | None = None) -> None:
    """Compile the request and answer schemas of `actions` now, or load them compiled. What is
    compiled is kept for the next start unless `keep` is False; by default (None) unless Python
    is told not to write bytecode (PYTHONDONTWRITEBYTECODE: the install step keeps it then,
    evce/precompile.py)."""
    texts = {name: _schema_text(name)
             for action in actions for name in (schema_name(CALL, action), schema_name(CALLRESULT, action))}
    path = _cache_path(texts)
    codes = _cached_codes(path, set(texts))
    if codes is None:
        codes = {name: _code(name, text) for name, text in texts.items()}
        if keep if keep is not None else not sys.dont_write_bytecode:
            _keep_codes(path, codes)
    for name, code in codes.items():
        if name not in _validators:
            _validators[name] = _function(code)


def _schema_text(name: str) -> str:
    return (SCHEMA_DIR / f"{name}.json").read_text(encoding="utf-8-sig")


def _code(name: str, text: str) -> CodeType:
    """The validator module of one schema, compiled: fastjsonschema's generated source
    (what `fastjsonschema.compile` executes, with its imports)."""
    source = fastjsonschema.compile_to_code(json.loads(text), use_default=_USE_DEFAULT, use_formats=_USE_FORMATS)
    return compile(source, f"<OCPP 1.6 schema {name}>", "exec")


def _function(code: CodeType) -> Validator:
    namespace: dict[str, object] = {}
    exec(code, namespace)  # noqa: S102 - code generated here from the schemas the ocpp package ships
    function = namespace["validate"]  # the generated entry point (the schemas' root scope)
    assert callable(function)
    return function


def _cache_path(texts: dict[str, str]) -> Path:
    key = hashlib.sha256()
    key.update(importlib.util.MAGIC_NUMBER)
    key.update(f"{fastjsonschema.VERSION},{_USE_DEFAULT},{_USE_FORMATS}".encode())
    for name in sorted(texts):
        key.update(f"\0{name}\0{texts[name]}".encode())
    return CACHE_DIR / f"ocpp16-validators.{key.hexdigest()[:24]}.marshal"


def _cached_codes(path: Path, names: set[str]) -> dict[str, CodeType] | None:
    try:
        codes = marshal.loads(path.read_bytes())  # noqa: S302 - as trusted as the .pyc files beside it
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError, TypeError) as error:
        logger.warning("compiled OCPP schemas %s unreadable (%s): compiling them again", path, error)
        return None
    if not isinstance(codes, dict) or set(codes) != names or not all(isinstance(c, CodeType) for c in codes.values()):
        return None
    return codes


def _keep_codes(path: Path, codes: dict[str, CodeType]) -> None:
    """Write the cache atomically (processes starting together may race: the last one wins,
    each writing the same content); stale caches of other keys are removed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            file.write(marshal.dumps(codes))
        os.chmod(temporary, 0o644)  # like the .pyc files: readable by the user the service runs as
        os.replace(temporary, path)
        for stale in path.parent.glob("ocpp16-validators.*.marshal"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError as error:  # a read-only installation: compiled at every start, as before
        logger.info("could not keep the compiled OCPP schemas in %s: %s", path.parent, error)


def schema_problem(message_type: int, action: str, payload: object) -> SchemaProblem | None:
    """None when `payload` is valid for `action`'s CALL or CALLRESULT schema; else what is wrong.

    Raises FileNotFoundError for an action OCPP 1.6 does not define.
    """
    try:
        validator(schema_name(message_type, action))(payload)
    except fastjsonschema.JsonSchemaValueException as error:
        code = ERROR_CODES.get(str(error.rule), "FormationViolation")
        return SchemaProblem(code, _describe(error)[:_DESCRIPTION_MAX])
    return None


def _describe(error: fastjsonschema.JsonSchemaValueException) -> str:
    """"meterValue[0].sampledValue must contain at least 1 items": the message without its
    "data." root and without the offending value (which may be a huge string)."""
    message = str(error.message)
    if message.startswith("data."):
        return message[len("data."):]
    if message.startswith("data "):
        return "payload " + message[len("data "):]
    return message

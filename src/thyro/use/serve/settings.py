"""Every option of ``thyro serve`` in one typed value, validated once: :class:`ServeSettings`.

The command line maps its flags onto the fields (``--max-upload-mb`` onto ``max_upload_bytes``, the token
from ``--token`` or ``THYRO_SERVE_TOKEN``), a Python caller passes them as keywords; either way the value
is checked here, once, and then handed down unchanged: the app, the service and the server read it and
check nothing again.  A setting that is refused raises :class:`ServeSettingsError`, which names the
setting as a Python caller typed it (``max_concurrency=0: must be at least 1.``); the command line
renders the same problems with its flags (:meth:`ServeSettingsError.render`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from thyro.errors import ConfigError
from thyro.use.scoring import METHODS

#: The engines a server can run (``thyro.use.engines``).
ENGINES = ("torch", "onnx")
#: uvicorn's log levels.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
#: Shortest token accepted: a guessable token is no protection.
MIN_TOKEN_CHARS = 16
#: Allowance for the multipart framing and form fields around the file, on top of the upload limit.
FRAMING_ALLOWANCE = 64 * 1024
_TOKEN_HINT = "e.g. python -c \"import secrets; print(secrets.token_urlsafe(24))\""


class Problem(NamedTuple):
    """One refused setting: its field, the value given, and what is wrong.

    ``text`` follows the setting's name (it starts with ``": "`` or a space) and may mention other
    settings as ``{field}``, filled in by :meth:`ServeSettingsError.render`.
    """

    field: str
    value: Any
    text: str


#: How a Python caller names the settings a message mentions.
PYTHON_NAMES = {"token": "token='...'", "insecure": "insecure=True"}


class ServeSettingsError(ConfigError):
    """Settings that cannot serve; the message names each setting as a Python caller typed it."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self, names: Mapping[str, str] | None = None,
               subject: Callable[[str, Any], str] | None = None) -> str:
        """The problems in one message, each setting named by ``names`` (field -> what the user typed,
        e.g. a flag) and each refused one shown by ``subject(field, value)``; defaults: Python's."""
        names = {**PYTHON_NAMES, **(names or {})}
        subject = subject or _python_subject
        mentions = {f: names.get(f, f) for f in ServeSettings.model_fields}
        return " ".join(subject(p.field, p.value) + p.text.format_map(mentions) for p in self.problems)


def _python_subject(field: str, value: Any) -> str:
    return field if field == "token" else f"{field}={value!r}"  # a token is never echoed


class ServeSettings(BaseModel):
    """What a server runs and the limits it keeps (``thyro serve``'s options, as Python values).

    Construct it with keywords (``ServeSettings(port=8080, engine="onnx")``); a refused value raises
    :class:`ServeSettingsError`.  Frozen: :meth:`replace` gives a changed copy, validated again.

    Attributes
    ----------
    host, port : str, int
        Where to listen.  Beyond this machine (not 127.0.0.0/8, ``::1`` or ``localhost``) a ``token`` is
        required unless ``insecure``.
    token : SecretStr, optional
        Every request must carry it (``Authorization: Bearer TOKEN``, or HTTP Basic with it as the
        password): printable ASCII, at least :data:`MIN_TOKEN_CHARS` characters.
    insecure : bool
        Serve beyond this machine without a token, on purpose.
    engine : {"torch", "onnx"}
        ``onnx`` runs ``MODEL_DIR/model.onnx`` (or ``onnx_path``) from ``thyro export``; no heatmaps.
    onnx_path : Path, optional
    method : {"gradcam", "gradcam++"}
        How heatmaps are drawn.
    point : str, optional
        Operating point for the class (default: the package's).
    max_upload_bytes : int
        Largest upload; a request body may be :data:`FRAMING_ALLOWANCE` more (413 beyond).
    max_reading : int
        Request bodies read at once (each held in memory, up to the limit); more get 503 with Retry-After.
    max_concurrency, queue : int
        Requests at the model at once (decoding, preprocessing, scoring), and waiting for it (their
        bodies read); beyond both, 503 with ``Retry-After``.
    max_batch : int
        Most images per model call (1: no micro-batching).
    batch_wait_ms : float
        How long a batch waits for more requests once it has one.
    header_timeout_s : float
        A connection must send a complete request head within this many seconds of opening, and of its
        first byte after a response (then 408 and closed).
    body_timeout_s, body_deadline_s : float
        Longest gap between parts of a request body, and longest time for the whole body (then 408).
    max_connections : int
        Connections and requests uvicorn holds at once (its ``limit_concurrency``); beyond, 503.
    model_threads : int, optional
        The model's intra-op threads (PyTorch: process-wide); :func:`thyro.use.serve.serve` gives half
        the cores when unset.
    openapi : bool
        Serve the schema at ``/openapi.json`` (never ``/docs`` or ``/redoc``: they load from a CDN).
    log_level : str
        uvicorn's log level (``warning``: no line per request).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    insecure: bool = False
    token: SecretStr | None = Field(None, validate_default=True)
    engine: str = "torch"
    onnx_path: Path | None = None
    method: str = "gradcam"
    point: str | None = None
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1)
    max_reading: int = Field(32, ge=1)
    max_concurrency: int = Field(8, ge=1)
    queue: int = Field(16, ge=0)
    max_batch: int = Field(8, ge=1)
    batch_wait_ms: float = Field(5.0, ge=0)
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(30.0, gt=0)
    body_deadline_s: float = Field(60.0, gt=0)
    max_connections: int = Field(512, ge=1)
    model_threads: int | None = Field(None, ge=1)
    openapi: bool = False
    log_level: str = "info"

    def __init__(self, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ServeSettingsError([_problem(e) for e in exc.errors()]) from None

    def replace(self, **changes: Any) -> ServeSettings:
        """A copy with ``changes``, validated again."""
        return type(self)(**{**{k: getattr(self, k) for k in type(self).model_fields}, **changes})

    @property
    def max_body_bytes(self) -> int:
        """Largest request body read: the upload limit and :data:`FRAMING_ALLOWANCE`."""
        return self.max_upload_bytes + FRAMING_ALLOWANCE

    @property
    def token_value(self) -> str | None:
        return self.token.get_secret_value() if self.token is not None else None

    @field_validator("engine")
    @classmethod
    def _engine(cls, value: str) -> str:
        return _choice(value, ENGINES)

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        return _choice(value, METHODS)

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        return _choice(value.lower(), LOG_LEVELS)

    @field_validator("token", mode="before")
    @classmethod
    def _token(cls, value: Any) -> Any:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text is None or text == "":
            return None
        if not isinstance(text, str):
            return value  # pydantic says what type it wants
        if not (text.isascii() and text.isprintable()):
            raise ValueError(" has characters other than printable ASCII (letters, digits, punctuation), which a "
                             f"client cannot send in an Authorization header; use another ({_TOKEN_HINT}).")
        if len(text) < MIN_TOKEN_CHARS:
            raise ValueError(f" is {len(text)} characters long; use at least {MIN_TOKEN_CHARS} ({_TOKEN_HINT}).")
        return text

    @model_validator(mode="after")
    def _reachable_only_with_a_token(self) -> ServeSettings:
        if self.token is None and not self.insecure and not is_loopback(self.host):
            raise ServeSettingsError([Problem("host", self.host, (
                " makes the server reachable from other machines, and it would answer anyone: give it a token "
                "({token}; clients send 'Authorization: Bearer TOKEN', a browser asks for it as the password), or "
                "pass {insecure} if an open server is what you want (a trusted network, a proxy in front that "
                "authenticates)."))])
        return self


def _choice(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(": choose " + " or ".join(repr(c) for c in choices) + ".")
    return value


def _problem(error: dict) -> Problem:
    """A pydantic error as a :class:`Problem`: our validators' texts as they are (with their ``{field}``
    mentions), pydantic's own in short."""
    field = str(error["loc"][0]) if error["loc"] else "settings"
    ctx = error.get("ctx") or {}
    kind = error["type"]
    if kind == "value_error":
        return Problem(field, error.get("input"), str(ctx["error"]))
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        text = f": must be {_BOUNDS[kind]} {bound:g}." if isinstance(bound, (int, float)) else \
            f": must be {_BOUNDS[kind]} {bound}."
    elif kind == "extra_forbidden":
        text = ": not a setting of thyro serve."
    else:
        text = f": {error['msg'][:1].lower()}{error['msg'][1:]}."
    return Problem(field, error.get("input"), text.replace("{", "{{").replace("}", "}}"))


_BOUNDS = {"greater_than_equal": "at least", "greater_than": "more than", "less_than_equal": "at most"}


def is_loopback(host: str) -> bool:
    """True when binding ``host`` is reachable from this machine only (127.0.0.0/8, ::1, ``localhost``)."""
    name = (host or "").strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def resolve(settings: ServeSettings | None, options: Mapping[str, Any]) -> ServeSettings:
    """``settings``, or settings made from keyword ``options`` (not both)."""
    if settings is None:
        return ServeSettings(**options)
    if options:
        raise ConfigError(f"pass either settings or keyword options ({', '.join(options)}), not both.")
    return settings

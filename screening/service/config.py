"""Service settings: from Serve's ``args`` (serveConfigV2 ``applications[].args``) or the environment.

Every key may also come from an environment variable ``SCREENING_<KEY>`` (upper case) when it is
absent from ``args``, so a Kubernetes deployment can set it from a ConfigMap or Secret.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from screening.core.errors import ScreeningError
from screening.core.urls import is_url

__all__ = ["ConfigError", "ServiceConfig", "DEFAULTS", "URL_SCHEMES", "normalise_root", "split_url"]

#: Object-store schemes a root may use (anything else, e.g. http://, is refused).
URL_SCHEMES = ("s3", "gs", "gcs")

ENV_PREFIX = "SCREENING_"

#: Limits and knobs with their defaults (all overridable from ``args`` or ``SCREENING_<KEY>``).
DEFAULTS: dict[str, Any] = {
    "max_perturbations": 50_000_000,  # per screen
    "max_spec_bytes": 1_000_000,  # request bodies (a submitted spec)
    "max_query_rows": 2_000_000,  # perturbations per query response (any format)
    "max_json_rows": 100_000,  # perturbations per JSON response (larger slices: format=arrow)
    "max_workers": 64,  # execution.num_workers per screen
    "submit_timeout_s": 600.0,  # how long a submit may take to check the inputs and load the model
    "namespace": "screening",  # Ray namespace of the detached job actors
}

#: Keys that shape the Serve deployment itself rather than the service.
DEPLOYMENT_KEYS = ("num_replicas", "max_ongoing_requests", "replica_cpus")


class ConfigError(ScreeningError, ValueError):
    """A service setting that is missing or invalid; the message names the key and its env variable."""


def split_url(text: str) -> tuple[str, list[str]]:
    """``s3://bucket/a/b`` → ("s3", ["bucket", "a", "b"]).

    Raises
    ------
    ValueError
        For a scheme not in :data:`URL_SCHEMES`, or empty, ``.`` or ``..`` segments.
    """
    scheme, _, rest = text.partition("://")
    if scheme not in URL_SCHEMES:
        raise ValueError(f"scheme {scheme!r} is not allowed (use a path or one of {list(URL_SCHEMES)})")
    segments = rest.rstrip("/").split("/")
    if not segments[0] or any(s in ("", ".", "..") for s in segments):
        raise ValueError(f"{text!r} is not a clean {scheme}://bucket/key URL (no empty, '.' or '..' parts)")
    return scheme, segments


def normalise_root(value: Any, key: str) -> str:
    """A root as the policy (:mod:`screening.service.policy`) compares it: a real absolute local path, or a
    clean bucket URL.

    Raises
    ------
    ConfigError
        If the root is not a string, has a refused scheme, or dot segments.
    """
    text = str(value).strip()
    if not text or "\x00" in text:
        raise ConfigError(f"{key}: empty or invalid root {value!r}")
    if text.startswith("file://"):
        text = text[len("file://"):]
    if is_url(text, include_file=False):
        try:
            scheme, segments = split_url(text)
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from None
        return f"{scheme}://" + "/".join(segments)
    return os.path.realpath(os.path.abspath(text))


def _env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


def _list(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise ConfigError(f"{key}: expected a list or a comma-separated string, got {type(value).__name__}")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _number(value: Any, key: str, kind: type) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} ({_env_name(key)}): expected a number, got {value!r}") from None
    if number <= 0:
        raise ConfigError(f"{key} ({_env_name(key)}): must be positive, got {value!r}")
    return number


def _flag(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{key} ({_env_name(key)}): expected true or false, got {value!r}")


@dataclass(frozen=True)
class ServiceConfig:
    """Resolved settings of one service deployment.

    Parameters
    ----------
    store_roots
        Local directories or ``s3://bucket/prefix`` roots where result stores may live; a
        spec's relative ``output.store`` goes under the first.
    input_roots
        Where a spec's inputs (genome, tracks, checkpoint, BED, VCF) may be read from;
        default: the store roots.
    registry
        Where job records are kept (one JSON file per screen); default
        ``<first store root>/.screening-jobs``.
    token_file
        File with one bearer token per line (re-read when it changes).
    token_digests
        sha256 of every token known when the application was built (file and
        ``SCREENING_API_TOKENS``): used by replicas that cannot read the token file.
    allow_user_code
        Let specs name ``model.import_path`` (Python imported and run on the server); off by default.
    """

    store_roots: tuple[str, ...]
    input_roots: tuple[str, ...]
    registry: str
    token_file: str | None
    token_digests: tuple[str, ...]
    max_perturbations: int = DEFAULTS["max_perturbations"]
    max_spec_bytes: int = DEFAULTS["max_spec_bytes"]
    max_query_rows: int = DEFAULTS["max_query_rows"]
    max_json_rows: int = DEFAULTS["max_json_rows"]
    max_workers: int = DEFAULTS["max_workers"]
    submit_timeout_s: float = DEFAULTS["submit_timeout_s"]
    namespace: str = DEFAULTS["namespace"]
    allow_user_code: bool = False
    deployment: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_args(cls, args: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> "ServiceConfig":
        """Resolve settings from Serve ``args``, falling back to ``SCREENING_*`` environment variables.

        Raises
        ------
        ConfigError
            On an unknown key, a bad value, no store root, or no API token at all
            (the service never runs open).
        """
        from screening.service.auth import token_digests

        args = dict(args or {})
        environ = os.environ if environ is None else environ
        known = {"store_roots", "input_roots", "registry", "token_file", "allow_user_code", *DEFAULTS, *DEPLOYMENT_KEYS}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ConfigError(f"unknown service setting(s) {unknown}; known: {sorted(known)}")

        def get(key: str, default: Any = None) -> Any:
            if args.get(key) is not None:
                return args[key]
            return environ.get(_env_name(key), default)

        store_roots = tuple(normalise_root(r, "store_roots") for r in _list(get("store_roots"), "store_roots"))
        if not store_roots:
            raise ConfigError("store_roots: give at least one store root (args or SCREENING_STORE_ROOTS)")
        input_roots = tuple(normalise_root(r, "input_roots") for r in _list(get("input_roots"), "input_roots")) or store_roots
        registry = normalise_root(get("registry") or _join(store_roots[0], ".screening-jobs"), "registry")
        token_file = get("token_file") or None
        digests = token_digests(token_file, environ.get("SCREENING_API_TOKENS", ""))
        if not digests:
            raise ConfigError(
                "no API tokens: give token_file (SCREENING_TOKEN_FILE, one token per line) "
                "or SCREENING_API_TOKENS (comma-separated)"
            )
        numbers = {key: _number(get(key, default), key, type(default)) for key, default in DEFAULTS.items() if key != "namespace"}
        deployment = {key: args[key] for key in DEPLOYMENT_KEYS if key in args}
        return cls(
            store_roots=store_roots,
            input_roots=input_roots,
            registry=registry,
            token_file=str(token_file) if token_file else None,
            token_digests=tuple(sorted(digests)),
            namespace=str(get("namespace", DEFAULTS["namespace"])),
            allow_user_code=_flag(get("allow_user_code", False), "allow_user_code"),
            deployment=deployment,
            **numbers,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values, to hand to the Serve deployment (no tokens: digests only)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ServiceConfig":
        data = dict(data)
        for key in ("store_roots", "input_roots", "token_digests"):
            data[key] = tuple(data[key])
        return cls(**data)


def _join(root: str, name: str) -> str:
    return root.rstrip("/") + "/" + name

"""What a submitted spec may name: stores under the configured roots, inputs under the input roots.

The server decides where a store lives. A relative ``output.store`` is placed under the first
store root; an absolute path or URL must already lie under one of the roots. Anything that
escapes them (``..``, a symlink out of the root, an absolute path elsewhere, another scheme or
bucket) is refused naming the field. Input paths (genome, tracks, checkpoint, BED, VCF) are
server-side paths and follow the same rule against the input roots; relative ones resolve
against the first input root. Execution settings that belong to the server (the Ray address,
a metrics port) are replaced.
"""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import os
import sys
import zipfile
from typing import Any

from screening.core.errors import ScreeningError
from screening.core.urls import is_url
from screening.service.config import URL_SCHEMES, normalise_root, split_url
from screening.spec import ScreenSpec, SpecError, input_path_fields, parse_spec
from screening.store.lease import LEASE_SUFFIX

__all__ = ["PolicyError", "normalise_root", "place_store", "check_input", "server_spec", "URL_SCHEMES"]

class PolicyError(ScreeningError, ValueError):
    """A spec field the server refuses; ``field`` is its dotted name (e.g. ``output.store``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _url_parts(text: str, field: str) -> tuple[str, list[str]]:
    """``s3://bucket/a/b`` → ("s3", ["bucket", "a", "b"]), refusing dot or empty segments (naming ``field``)."""
    try:
        return split_url(text)
    except ValueError as err:
        raise PolicyError(field, str(err)) from None


def _under(path: str, root: str, strictly: bool) -> bool:
    if path == root:
        return not strictly
    return path.startswith(root.rstrip("/") + "/") if is_url(root, include_file=False) else path.startswith(root.rstrip(os.sep) + os.sep)


def _resolve(value: Any, roots: tuple[str, ...], field: str, strictly: bool) -> str:
    """``value`` made absolute (relative → under the first root) and checked to lie under a root."""
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(field, f"expected a non-empty path, got {value!r}")
    if "\x00" in value:
        raise PolicyError(field, "path contains a NUL byte")
    text = value[len("file://"):] if value.startswith("file://") else value
    if is_url(text, include_file=False):
        scheme, segments = _url_parts(text, field)
        resolved = f"{scheme}://" + "/".join(segments)
    else:
        parts = text.replace("\\", "/").split("/")
        if ".." in parts:
            raise PolicyError(field, f"{value!r}: '..' is not allowed")
        if os.path.isabs(text):
            resolved = os.path.realpath(text)
        else:
            first = roots[0]
            if is_url(first, include_file=False):
                scheme, segments = _url_parts(first + "/" + text, field)
                resolved = f"{scheme}://" + "/".join(segments)
            else:
                resolved = os.path.realpath(os.path.join(first, text))
    if any(_under(resolved, root, strictly) for root in roots):
        return resolved
    raise PolicyError(field, f"{value!r} is outside the server's allowed roots ({', '.join(roots)})")


def place_store(value: Any, store_roots: tuple[str, ...], default_name: str, registry: str | None = None) -> str:
    """Where a screen's store goes: ``value`` under a store root, or ``default_name`` under the first.

    Raises
    ------
    PolicyError
        Naming ``output.store`` when it escapes the roots, is a root itself, or lies in the registry.
    """
    if value is None:
        value = default_name
    resolved = _resolve(value, store_roots, "output.store", strictly=True)
    if resolved.rstrip("/").endswith(LEASE_SUFFIX):
        raise PolicyError("output.store", f"{value!r} ends in {LEASE_SUFFIX!r}, the name of a store's lease")
    if registry and _under(resolved, registry, strictly=False):
        raise PolicyError("output.store", f"{value!r} lies in the server's job registry")
    return resolved


def check_input(field: str, value: Any, input_roots: tuple[str, ...]) -> str:
    """An input path of a spec, absolute and checked to lie under an input root.

    Raises
    ------
    PolicyError
        Naming ``field`` when the path escapes the input roots.
    """
    return _resolve(value, input_roots, field, strictly=False)


def _check_model_code(raw: dict[str, Any], config) -> None:
    """A user model's ``import_path`` runs Python on the server: refused unless the server allows it,
    and then only from ``python_path`` folders under the input roots."""
    model = raw.get("model")
    if not isinstance(model, dict):
        return
    if model.get("import_path") is not None and not config.allow_user_code:
        raise PolicyError("model.import_path", "this server does not import user code (allow_user_code is off)")
    if not config.allow_user_code:
        _refuse_torchscript(model)
    paths = model.get("python_path")
    if isinstance(paths, list):
        model["python_path"] = [check_input(f"model.python_path.{i}", p, config.input_roots) for i, p in enumerate(paths)]
    elif paths is not None:
        raise PolicyError("model.python_path", f"expected a list of folders, got {type(paths).__name__}")
    if model.get("import_path") is not None:
        _check_import_source(model["import_path"], model.get("python_path") or [])


def _refuse_torchscript(model: dict[str, Any]) -> None:
    """TorchScript is code (its ``forward`` can read and write any file the server can): refused when user
    code is off. A ``kind: user`` model without ``import_path`` is TorchScript by definition, whatever its
    file holds when the job opens it later; any other checkpoint is refused when its content is a TorchScript
    archive, whatever its name. (C.Origami and Orca checkpoints are read with ``weights_only=True``, which
    never runs TorchScript; this makes the refusal a clear 422 instead of a load error.)
    """
    checkpoint = model.get("checkpoint")
    if checkpoint is None:
        return
    why = "this server does not run user code (allow_user_code is off), and a TorchScript model is code"
    if model.get("kind") == "user" and model.get("import_path") is None:
        raise PolicyError("model.checkpoint", f"{checkpoint!r}: kind user without import_path loads TorchScript; {why}")
    if isinstance(checkpoint, str) and not is_url(checkpoint, include_file=False) and _is_torchscript_file(checkpoint):
        raise PolicyError("model.checkpoint", f"{checkpoint!r} is a TorchScript archive; {why}")


def _is_torchscript_file(path: str) -> bool:
    """Whether ``path`` is a TorchScript archive by its content (False when it cannot be read)."""
    from pathlib import Path

    from screening.models.checkpoint import is_torchscript

    try:
        return Path(path).is_file() and is_torchscript(Path(path))
    except (OSError, ValueError, zipfile.BadZipFile):  # unreadable or a damaged zip: the loader names the problem later
        return False


def _check_import_source(import_path: Any, folders: list[str]) -> None:
    """The imported module must come from the user's ``python_path`` folders and nowhere else.

    Otherwise an import path could name any installed module (``subprocess:run``) and
    call it with ``model.config`` as arguments.
    """
    if not isinstance(import_path, str) or ":" not in import_path:
        return  # the spec's own validation names the malformed value
    top = import_path.split(":", 1)[0].split(".", 1)[0]
    if not top.isidentifier():
        return
    try:
        installed = top in sys.modules or importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        installed = True
    if installed:
        raise PolicyError(
            "model.import_path", f"{import_path!r}: {top!r} is a module of the server; user code must come from model.python_path"
        )
    if importlib.machinery.PathFinder.find_spec(top, folders) is None:
        raise PolicyError("model.import_path", f"{import_path!r}: no module {top!r} in model.python_path {folders}")


def _mapping(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        value = raw[key] = {}
    if not isinstance(value, dict):
        raise PolicyError(key, f"expected a mapping, got {type(value).__name__}")
    return value


def server_spec(raw: Any, config, job_id: str) -> ScreenSpec:
    """Validate a submitted spec under the server's rules.

    Parameters
    ----------
    raw
        The submitted document (a mapping).
    config
        :class:`~screening.service.config.ServiceConfig`.
    job_id
        Names the default store (``<job_id>.zarr`` under the first store root).

    Raises
    ------
    PolicyError
        A path outside the roots, or more workers than allowed, naming the field.
    SpecError
        Any other invalid field (the message names each).
    """
    if not isinstance(raw, dict):
        raise PolicyError("(top level)", f"expected a mapping, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    output = _mapping(raw, "output")
    output["store"] = place_store(output.get("store"), config.store_roots, f"{job_id}.zarr", config.registry)
    execution = _mapping(raw, "execution")
    execution["address"] = None  # screens run on the server's own Ray cluster
    execution["metrics_port"] = None  # the service publishes progress on its own /metrics
    workers = execution.get("num_workers")
    if isinstance(workers, int) and workers > config.max_workers:
        raise PolicyError("execution.num_workers", f"{workers} workers asked, this server allows at most {config.max_workers}")
    if output.get("storage_options"):
        raise PolicyError("output.storage_options", "set by the server (its environment), not by a submitted spec")
    for field, holder, key in input_path_fields(raw):
        holder[key] = check_input(field, holder[key], config.input_roots)
    _check_model_code(raw, config)
    local = [root for root in config.input_roots if not is_url(root, include_file=False)]
    return parse_spec(raw, base_dir=local[0] if local else None, source="(submitted)")


def spec_error_fields(err: SpecError) -> list[dict[str, str]]:
    """``[{"field", "message"}]`` of a :class:`SpecError` (its structured ``fields``)."""
    return list(err.fields)

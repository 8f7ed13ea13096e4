"""The one safe reader of checkpoint files (and a streamed file checksum), for every model adapter.

Lightning checkpoints of the original C.Origami code carry ``hyper_parameters =
{'args': argparse.Namespace(...)}``, which ``torch.load(weights_only=True)``
refuses. We allow exactly that one class for the duration of the load and never
fall back to full unpickling, so a checkpoint cannot run code. What a checkpoint must hold
for a given architecture is the adapter's business (C.Origami's in
:mod:`screening.models.corigami`); this module imports no architecture.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from screening.models.base import ModelError

__all__ = [
    "describe_misfit", "file_sha256", "is_state_dict", "is_torchscript", "read_checkpoint", "read_state_dict",
    "torch_load_safe",
]

_SAFE_GLOBALS = [argparse.Namespace]
PREFIX = "model."  # the original's LightningModule attribute: its checkpoints' keys start with it
_SHOW = 10  # keys listed per category in mismatch messages


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints can be large).

    Parameters
    ----------
    path
        File to hash.
    chunk_size
        Bytes read at a time.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _describe_load_error(exc: BaseException) -> str:
    """Short reason for a failed load, without torch's advice to disable weights_only."""
    text = str(exc)
    refused = re.search(r"GLOBAL ([\w.]+)", text)
    if refused:
        return (
            f"refused to unpickle {refused.group(1)}: only tensors, plain containers and argparse.Namespace "
            "are allowed in a checkpoint"
        )
    if isinstance(exc, pickle.UnpicklingError):
        boilerplate = ("weights_only", "Weights only", "Check the documentation", "Please file an issue")
        detail = [ln.strip() for ln in text.splitlines() if ln.strip() and not any(b in ln for b in boilerplate)]
        return f"not a safe checkpoint pickle ({'; '.join(detail) or type(exc).__name__})"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"corrupt or truncated file ({type(exc).__name__}: {first})"


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive: a zip holding ``<name>/constants.pkl`` (``torch.save``'s
    zips have none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def torch_load_safe(path: Path) -> object:
    if not path.is_file():
        raise ModelError(f"checkpoint {path}: no such file")
    # torch.load(weights_only=True) hands a TorchScript archive to torch.jit.load, which runs the
    # archive's TorchScript (__setstate__ methods) while loading: refused before torch sees it.
    if is_torchscript(path):
        raise ModelError(
            f"checkpoint {path}: a TorchScript archive, not a checkpoint of weights; it is code, and only a "
            "user model (model.kind 'user', where the service allows user code) may load it"
        )
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad files; all mean "unusable"
        raise ModelError(f"checkpoint {path}: {_describe_load_error(exc)}") from exc


def is_state_dict(obj: object) -> bool:
    """Whether ``obj`` is a non-empty mapping of string names to tensors."""
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def read_checkpoint(path: Path, config_key: str | None = None) -> tuple[dict[str, torch.Tensor], object | None]:
    """State dict (``model.`` prefix stripped) and the value embedded under ``config_key`` beside it, if any."""
    obj = torch_load_safe(path)
    embedded = None
    if isinstance(obj, Mapping) and "state_dict" in obj:
        embedded = obj.get(config_key) if config_key is not None else None
        obj = obj["state_dict"]
    if not is_state_dict(obj):
        raise ModelError(
            f"checkpoint {path}: not a model checkpoint (expected a Lightning checkpoint with 'state_dict' "
            f"or a mapping of names to tensors, got {type(obj).__name__})"
        )
    if all(k.startswith(PREFIX) for k in obj):
        obj = {k[len(PREFIX) :]: v for k, v in obj.items()}
    return dict(obj), embedded


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a Lightning checkpoint or a bare state_dict safely; strip a ``model.`` prefix.

    Parameters
    ----------
    path
        ``.ckpt`` (dict with ``state_dict``) or a file holding a state_dict.

    Returns
    -------
    dict
        Tensor name → tensor on CPU.

    Raises
    ------
    ModelError
        Missing, corrupt or unsafe file, or one that holds no state_dict.
    """
    return read_checkpoint(Path(path))[0]


def describe_misfit(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Lines naming the missing, unexpected and mis-shaped keys of ``state``; empty when it fits.

    Parameters
    ----------
    state
        A checkpoint's tensors.
    expected
        Key → shape of the module the checkpoint should fit.

    Returns
    -------
    list of str
        One line per non-empty category, listing its first 10 keys (mismatches with both shapes) and a count.
    """
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    mismatched = [
        f"{k}: checkpoint {got[k]} vs model {tuple(expected[k])}" for k in expected if k in got and got[k] != tuple(expected[k])
    ]
    lines = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if items:
            more = f" … and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
            lines.append(f"{len(items)} {label}: " + "; ".join(items[:_SHOW]) + more)
    return lines

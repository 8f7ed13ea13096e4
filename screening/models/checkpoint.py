"""Safe checkpoint reading for C.Origami (and a streamed file checksum).

Lightning checkpoints of the original code carry ``hyper_parameters =
{'args': argparse.Namespace(...)}``, which ``torch.load(weights_only=True)``
refuses. We allow exactly that one class for the duration of the load and never
fall back to full unpickling, so a checkpoint cannot run code.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import torch

from screening.models.base import ModelError
from screening.models.corigami import ConvTransModel, CorigamiConfig

__all__ = [
    "file_sha256",
    "read_state_dict",
    "save_corigami_checkpoint",
    "infer_corigami_config",
    "check_state_dict",
    "load_corigami_checkpoint",
]

_SAFE_GLOBALS = [argparse.Namespace]
_PREFIX = "model."
_CONFIG_KEY = "corigami_config"
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


def _torch_load_safe(path: Path) -> object:
    if not path.is_file():
        raise ModelError(f"checkpoint {path}: no such file")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad files; all mean "unusable"
        raise ModelError(f"checkpoint {path}: {_describe_load_error(exc)}") from exc


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """State dict (prefix stripped) and the embedded ``corigami_config`` dict, if any."""
    obj = _torch_load_safe(path)
    embedded = None
    if isinstance(obj, Mapping) and "state_dict" in obj:
        embedded = obj.get(_CONFIG_KEY)
        obj = obj["state_dict"]
    if not _is_state_dict(obj):
        raise ModelError(
            f"checkpoint {path}: not a model checkpoint (expected a Lightning checkpoint with 'state_dict' "
            f"or a mapping of names to tensors, got {type(obj).__name__})"
        )
    if all(k.startswith(_PREFIX) for k in obj):
        obj = {k[len(_PREFIX) :]: v for k, v in obj.items()}
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
    return _read(Path(path))[0]


def save_corigami_checkpoint(path: str | Path, model: ConvTransModel) -> None:
    """Save ``model`` in the original's layout plus its config (plain types, safe to load).

    The config travels as ``corigami_config`` so that fields that tensor shapes
    cannot reveal (``n_heads``, ``dropout``) survive the round trip.
    """
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(model.config).items()}
    state = {_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, _CONFIG_KEY: config}, Path(path))


def _embedded_config(embedded: object, path: Path) -> CorigamiConfig:
    try:
        return CorigamiConfig(**embedded)  # type: ignore[arg-type]
    except (TypeError, ModelError) as exc:
        raise ModelError(f"checkpoint {path}: invalid {_CONFIG_KEY} {embedded!r}: {exc}") from exc


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state if (m := regex.fullmatch(k))})


def infer_corigami_config(state: Mapping[str, torch.Tensor]) -> CorigamiConfig:
    """Best-effort :class:`CorigamiConfig` from tensor shapes.

    Fields whose tensors are absent keep their defaults (the strict key check
    then reports the missing keys). ``n_heads`` cannot be read from shapes and
    stays 8. The window is ``pe.shape[0] * bin_size`` (the original's ``pe``
    has one row per output bin).
    """
    defaults = CorigamiConfig()
    fields: dict[str, object] = {}

    def shape(key: str) -> tuple[int, ...] | None:
        return tuple(state[key].shape) if key in state else None

    if (s := shape("encoder.conv_start_epi.0.weight")) and len(s) == 3:
        fields["num_genomic_features"] = s[1]
    if (s := shape("encoder.conv_start_seq.0.weight")) and len(s) == 3:
        fields["stem_width"] = s[0]
    widths = []
    while (s := shape(f"encoder.res_blocks_seq.{len(widths)}.scale.0.weight")) and len(s) == 3:
        widths.append(s[0])
        fields["kernel_size"] = s[2]
    if widths:
        fields["block_widths"] = tuple(widths)
    if (s := shape("encoder.conv_end.weight")) and len(s) == 3:
        fields["mid_hidden"] = s[0]
    if n_layers := _count(state, r"attn\.module\.layers\.(\d+)\.linear1\.weight"):
        fields["n_layers"] = n_layers
    if (s := shape("attn.module.layers.0.linear1.weight")) and len(s) == 2:
        fields["ff_hidden"] = s[0]
    if (s := shape("decoder.conv_start.0.weight")) and len(s) == 4:
        fields["decoder_hidden"] = s[0]
    if n_dec := _count(state, r"decoder\.res_blocks\.(\d+)\.res\.0\.weight"):
        fields["decoder_blocks"] = n_dec
    bin_size = 2 ** (1 + len(fields.get("block_widths", defaults.block_widths)))
    if (s := shape("attn.pos_encoder.pe")) and len(s) == 3 and s[0] > 0 and s[1] == 1:
        fields["window_length"] = s[0] * bin_size
    try:
        return CorigamiConfig(**fields)
    except ModelError as exc:
        raise ModelError(f"cannot infer a C.Origami configuration from the weights: {exc}") from exc


def check_state_dict(state: Mapping[str, torch.Tensor], config: CorigamiConfig, source: str = "state_dict") -> None:
    """Raise :class:`ModelError` unless ``state`` fits ``ConvTransModel(config)`` exactly.

    The message names missing keys, unexpected keys and every shape mismatch
    with both shapes (the first 10 of each, plus counts).
    """
    with torch.device("meta"):  # shapes only: no memory, no init cost
        expected = {k: tuple(v.shape) for k, v in ConvTransModel(config).state_dict().items()}
    problems = describe_misfit(state, expected)
    if problems:
        raise ModelError("\n".join([f"{source} does not fit ConvTransModel({config})", *problems]))


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


def load_corigami_checkpoint(
    path: str | Path, config: CorigamiConfig | None = None
) -> tuple[dict[str, torch.Tensor], CorigamiConfig]:
    """Read and validate a C.Origami checkpoint.

    Parameters
    ----------
    path
        Lightning ``.ckpt`` of the original code or a bare state_dict file.
    config
        Expected model size. When ``None``: the config saved by
        :func:`save_corigami_checkpoint` if present, else inferred from tensor
        shapes (``n_heads`` then defaults to 8).

    Returns
    -------
    state_dict, config
        Weights without the ``model.`` prefix, ready for
        ``ConvTransModel(config).load_state_dict(state_dict)``, and the config.

    Raises
    ------
    ModelError
        Missing, truncated, corrupt or unsafe file; no state_dict inside; or
        weights that do not fit the architecture (keys and shapes named).
    """
    path = Path(path)
    state, embedded = _read(path)
    if config is None:
        config = _embedded_config(embedded, path) if embedded is not None else infer_corigami_config(state)
    check_state_dict(state, config, source=f"checkpoint {path}")
    return state, config

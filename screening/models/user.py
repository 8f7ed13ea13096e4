"""Users' own PyTorch models behind the one :class:`~screening.models.base.ModelAdapter`.

Two routes (``model.kind: user``; see ``docs/user_models.md``):

* ``import_path: package.module:factory``: a class or function that builds the
  ``nn.Module`` from ``model.config`` (keyword arguments), with weights from a
  state-dict ``checkpoint`` (read with ``weights_only=True``) or seeded random
  weights (``random_seed``, for smoke tests);
* a TorchScript ``checkpoint`` (``torch.jit.load``) and no import path.

``model.declare`` (:class:`~screening.spec.UserModelDeclaration`) says what the
model takes and returns; :class:`UserModelAdapter` builds inputs from it and
:func:`check_user_model` holds the model to it with one forward on a dummy batch
before anything is run, so a mismatch stops the screen with a message naming the
declared field and what the model did instead.

Importing ``import_path`` runs the user's Python code, and a TorchScript file
carries its own program: load only models you trust.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from screening.core.encode import ALPHABET, one_hot
from screening.models.base import InputLayout, ModelAdapter, ModelError, PositionEncoding, WindowGeometry, state_dict_sha256
from screening.models.checkpoint import describe_misfit, is_state_dict, is_torchscript
from screening.models.precision import strict_float32_cuda
from screening.spec import ModelSpec, UserModelDeclaration

__all__ = [
    "UserModelAdapter",
    "build_user_module",
    "check_user_model",
    "import_factory",
    "load_user_model",
    "read_user_state_dict",
]

_SHOW = 10  # keys listed per category in mismatch messages
_CHECK_BATCH = 2  # a batch of 2 catches models that squeeze or mix the batch axis


class UserModelAdapter(ModelAdapter):
    """Adapter for any ``nn.Module`` (or TorchScript module) described by a declaration.

    Parameters
    ----------
    module
        The model; moved to ``device`` and put in eval mode.
    declaration
        ``model.declare`` of the spec: geometry, input layout, alphabet, N encoding, tracks.
    device
        Torch device for inference.
    name
        Name recorded in the store's provenance.

    Notes
    -----
    Outputs ``[B, 1, n, n]`` are returned as ``[B, n, n]``, in float32.
    """

    def __init__(
        self,
        module: nn.Module,
        declaration: UserModelDeclaration,
        device: str | torch.device = "cpu",
        name: str = "user",
    ) -> None:
        super().__init__(module, device)
        self.declaration = declaration
        self.geometry = WindowGeometry(
            declaration.window_length, declaration.bin_size, declaration.n_bins, declaration.map_offset
        )
        self.track_names = tuple(declaration.tracks)
        self.symmetric = declaration.symmetric
        self.name = name
        if self.device.type == "cuda":
            strict_float32_cuda()
        alphabet = declaration.alphabet
        n_dna = len(alphabet)
        self.input_layout = InputLayout(
            sequence=tuple(alphabet.index(base) for base in "ACGT"),  # type: ignore[arg-type]
            tracks=tuple(range(n_dna, n_dna + len(self.track_names))),
            length_axis=2 if declaration.input_layout == "NCL" else 1,
            n=alphabet.index("N") if "N" in alphabet else None,
        )

    def build_input(self, codes: np.ndarray, tracks: np.ndarray | None) -> torch.Tensor:
        """Base codes and tracks → float32 input in the declared layout, on the adapter's device.

        Parameters
        ----------
        codes
            ``uint8 [B, window_length]`` base codes (A0 C1 G2 T3 N4).
        tracks
            ``float32 [B, n_tracks, window_length]``, already transformed; ``None``
            (or zero tracks) for a sequence-only model.

        Returns
        -------
        torch.Tensor
            ``[B, C, L]`` (``NCL``) or ``[B, L, C]`` (``NLC``): the alphabet's DNA
            channels, then the declared tracks.
        """
        return self.host_input(codes, tracks).to(self.device)

    def host_input(self, codes: np.ndarray, tracks: np.ndarray | None) -> torch.Tensor:
        """:meth:`build_input` on the host (CPU), for pinned asynchronous copies to the device."""
        declared = self.declaration
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != declared.window_length:
            raise ModelError(f"codes must be [B, {declared.window_length}] (declare.window_length), got {codes.shape}")
        n_tracks = len(self.track_names)
        expected = (codes.shape[0], n_tracks, codes.shape[1])
        if n_tracks and (tracks is None or np.shape(tracks) != expected):
            got = None if tracks is None else np.shape(tracks)
            raise ModelError(f"tracks must be {list(expected)} for declare.tracks {list(self.track_names)}, got {got}")
        if not n_tracks and tracks is not None and np.size(tracks):
            raise ModelError(f"the model declares no tracks, got tracks of shape {np.shape(tracks)}")
        out = np.empty((*codes.shape, declared.n_channels), dtype=np.float32)
        n_dna = len(declared.alphabet)
        out[..., :n_dna] = one_hot(codes, order=declared.alphabet, n_value=declared.n_value)
        if n_tracks:
            out[..., n_dna:] = np.asarray(tracks, dtype=np.float32).transpose(0, 2, 1)
        inputs = torch.from_numpy(out)
        if declared.input_layout == "NCL":
            inputs = inputs.transpose(1, 2).contiguous()
        return inputs

    def position_encoding(self) -> PositionEncoding:
        """The declared layout: one-hot DNA in the declared alphabet (N as ``n_value``), then the tracks."""
        declared = self.declaration
        table = one_hot(np.arange(5, dtype=np.uint8), order=declared.alphabet, n_value=declared.n_value)
        return PositionEncoding(table, length_axis=2 if declared.input_layout == "NCL" else 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Differentiable forward: declared input → float32 ``[B, n_bins, n_bins]``."""
        return _as_maps(self.module(inputs.to(self.device)))


def _as_maps(output: Any) -> torch.Tensor:
    """``[B, 1, n, n]`` → ``[B, n, n]`` float32; anything else passes through for the checks."""
    if isinstance(output, torch.Tensor):
        if output.ndim == 4 and output.shape[1] == 1:
            output = output[:, 0]
        return output.float()
    return output


# --------------------------------------------------------------------------- building the module


def _add_to_sys_path(folders: tuple[str, ...]) -> None:
    """Put folders first on ``sys.path`` (kept: the model may import lazily at forward time)."""
    for folder in reversed(folders):
        if folder not in sys.path:
            sys.path.insert(0, folder)


def import_factory(import_path: str, python_path: tuple[str, ...] = ()) -> Callable[..., Any]:
    """Import ``package.module:attr`` (``attr`` may be dotted) and return the attribute.

    Parameters
    ----------
    import_path
        ``package.module:factory``.
    python_path
        Folders put on ``sys.path`` first.

    Raises
    ------
    ModelError
        Naming the import path: module not found, import failing, attribute missing
        or not callable.
    """
    module_name, sep, attr_path = import_path.partition(":")
    if not sep or not module_name or not attr_path:
        raise ModelError(f"model.import_path {import_path!r} is not 'package.module:factory'")
    _add_to_sys_path(tuple(python_path))
    where = f"model.import_path {import_path!r}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ModelError(
            f"{where}: cannot import {module_name!r} ({exc}); install it, or put its folder on "
            "model.python_path or PYTHONPATH (the Ray workers import it too)"
        ) from exc
    except Exception as exc:  # the user's module raised while being imported
        raise ModelError(f"{where}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc
    target: Any = module
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise ModelError(f"{where}: {module_name!r} has no attribute {attr_path!r} ({part!r} is missing)")
        target = getattr(target, part)
    if not callable(target):
        raise ModelError(f"{where}: {attr_path!r} is a {type(target).__name__}, not a class or function")
    return target


def build_user_module(
    import_path: str, config: Mapping[str, Any], python_path: tuple[str, ...] = (), seed: int | None = None
) -> nn.Module:
    """Call the factory with ``config`` as keyword arguments, under ``seed`` if given.

    The global RNG state is left untouched when seeded.

    Raises
    ------
    ModelError
        Import problems (see :func:`import_factory`), a factory that raises, or one
        that returns something other than an ``nn.Module``.
    """
    factory = import_factory(import_path, python_path)
    try:
        if seed is None:
            module = factory(**config)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                module = factory(**config)
    except Exception as exc:
        raise ModelError(
            f"model.import_path {import_path!r} raised {type(exc).__name__} when called with model.config "
            f"{dict(config)}: {exc}"
        ) from exc
    if not isinstance(module, nn.Module):
        raise ModelError(f"model.import_path {import_path!r} returned a {type(module).__name__}, not a torch.nn.Module")
    return module


# --------------------------------------------------------------------------- weights


def read_user_state_dict(path: str | Path, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict safely (``weights_only=True``): plain, or under ``"state_dict"``.

    Parameters
    ----------
    path
        The checkpoint file.
    prefix
        Stripped from every key that starts with it (e.g. Lightning's ``model.``).

    Raises
    ------
    ModelError
        Missing, corrupt or unsafe file (one that would need arbitrary unpickling), a
        TorchScript archive, or no mapping of names to tensors inside.
    """
    from screening.models.checkpoint import torch_load_safe  # the one safe reader of the package

    path = Path(path)
    if path.is_file() and is_torchscript(path):
        raise ModelError(
            f"checkpoint {path} is a TorchScript archive, not a state dict: drop model.import_path "
            "(and model.config) to load it as TorchScript"
        )
    obj = torch_load_safe(path)
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not is_state_dict(obj):
        what = f"a mapping with keys {list(obj)[:_SHOW]}" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
        raise ModelError(
            f"checkpoint {path}: no state dict inside (expected a mapping of names to tensors, or one under "
            f"'state_dict'; got {what})"
        )
    if prefix:
        obj = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in obj.items()}
    return dict(obj)


def _check_fits(state: Mapping[str, torch.Tensor], module: nn.Module, source: str) -> None:
    """Raise naming missing, unexpected and mis-shaped keys unless ``state`` fits ``module`` exactly."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    problems = describe_misfit(state, expected)
    if not problems:
        return
    parts = [f"{source} does not fit the model", *problems]
    prefix = _common_prefix(state)
    if prefix and {k[len(prefix) :] for k in state} & set(expected):
        parts.append(f"every checkpoint key starts with {prefix!r}: set model.state_dict_prefix: {prefix!r}")
    raise ModelError("\n".join(parts))


def _common_prefix(keys: Mapping[str, Any]) -> str:
    """The first dotted component shared by every key (``"model."``), or ``""``."""
    firsts = {key.split(".", 1)[0] for key in keys if "." in key}
    return f"{firsts.pop()}." if len(firsts) == 1 and all("." in key for key in keys) else ""


def _load_torchscript(path: Path) -> nn.Module:
    if not path.is_file():
        raise ModelError(f"checkpoint {path}: no such file")
    if not is_torchscript(path):
        raise ModelError(
            f"checkpoint {path} is not a TorchScript archive; for a state dict give model.import_path "
            "('package.module:factory') to build the model it fits"
        )
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError subclasses for damaged archives
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelError(f"checkpoint {path}: unreadable TorchScript archive ({type(exc).__name__}: {first})") from exc


# --------------------------------------------------------------------------- the load-time check


def _dummy_batch(declaration: UserModelDeclaration) -> tuple[np.ndarray, np.ndarray | None]:
    """Random bases with a run of N, and random tracks in [0, 2) (seeded: the check is reproducible)."""
    rng = np.random.default_rng(0)
    length = declaration.window_length
    codes = rng.integers(0, 4, (_CHECK_BATCH, length), dtype=np.uint8)
    codes[:, length // 3 : length // 3 + max(1, length // 50)] = ALPHABET.index("N")
    n_tracks = len(declaration.tracks)
    tracks = rng.uniform(0, 2, (_CHECK_BATCH, n_tracks, length)).astype(np.float32) if n_tracks else None
    return codes, tracks


def check_user_model(adapter: UserModelAdapter) -> None:
    """Run one dummy batch through the model and hold it to its declaration.

    Refuses a model that fails on the declared input (length, layout, channels),
    returns something other than ``[B, n_bins, n_bins]`` (or ``[B, 1, n_bins,
    n_bins]``), returns non-finite values, or is declared symmetric and is not.

    Raises
    ------
    ModelError
        Naming the declared field and the observed value.
    """
    declared = adapter.declaration
    codes, tracks = _dummy_batch(declared)
    inputs = adapter.build_input(codes, tracks)
    n, b = declared.n_bins, _CHECK_BATCH
    try:
        with torch.no_grad():
            output = _as_maps(adapter.module(inputs))
    except Exception as exc:  # whatever the user's forward raises
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelError(
            f"the model fails on the declared input {list(inputs.shape)} (declare.window_length "
            f"{declared.window_length}, declare.input_layout {declared.input_layout}, {declared.n_channels} channels = "
            f"declare.alphabet {declared.alphabet!r} + declare.tracks {list(declared.tracks)}): "
            f"{type(exc).__name__}: {first}"
        ) from exc
    if not isinstance(output, torch.Tensor):
        raise ModelError(f"the model returns a {type(output).__name__}; it must return one tensor [B, n_bins, n_bins]")
    if tuple(output.shape) != (b, n, n):
        raise ModelError(
            f"the model returns shape {list(output.shape)} for a batch of {b}; declare.n_bins {n} needs "
            f"[{b}, {n}, {n}] (or [{b}, 1, {n}, {n}])"
        )
    bad = int((~torch.isfinite(output)).sum())
    if bad:
        raise ModelError(f"the model returns {bad} non-finite values (NaN or inf) of {output.numel()} on a dummy batch")
    if declared.symmetric:
        asymmetry = float((output - output.transpose(1, 2)).abs().max())
        scale = float(output.abs().max())
        if asymmetry > 1e-5 * max(1.0, scale):
            raise ModelError(f"declare.symmetric is true but the model's map is not (max |M - M^T| = {asymmetry:.3g})")


# --------------------------------------------------------------------------- entry point


def load_user_model(spec: ModelSpec, device: str = "cpu") -> UserModelAdapter:
    """Build, load and check a ``kind: user`` model from its spec.

    Parameters
    ----------
    spec
        The spec's ``model`` section (``import_path`` + ``checkpoint``/``random_seed``,
        or a TorchScript ``checkpoint``; ``declare`` required).
    device
        Torch device (already resolved by :func:`screening.models.loader.load_model`).

    Raises
    ------
    ModelError
        Import problems, unsafe or mismatching checkpoints, and models that do not
        match their declaration, each naming the import path, file, keys or field.
    """
    from screening.models.checkpoint import file_sha256

    if spec.declare is None:  # the spec validator requires it; guards direct calls
        raise ModelError("model.declare is required for kind: user")
    if spec.import_path is None:
        path = Path(spec.checkpoint)
        module = _load_torchscript(path)
        checksum, name = file_sha256(path), f"user:{path.name}"
    else:
        module = build_user_module(spec.import_path, spec.config, spec.python_path, spec.random_seed)
        if spec.checkpoint is not None:
            path = Path(spec.checkpoint)
            state = read_user_state_dict(path, spec.state_dict_prefix)
            _check_fits(state, module, f"checkpoint {path} (for {spec.import_path})")
            module.load_state_dict(state, strict=True)
            checksum, name = file_sha256(path), f"user:{spec.import_path}:{path.name}"
        else:
            checksum, name = state_dict_sha256(module), f"user:{spec.import_path}:random-seed{spec.random_seed}"
    adapter = UserModelAdapter(module, spec.declare, device=device, name=spec.name or name)
    adapter.checksum = checksum
    check_user_model(adapter)
    return adapter

"""Build a model adapter from a spec's ``model`` section."""

from __future__ import annotations

import torch

from screening.models.base import ModelAdapter, ModelError
from screening.spec import ModelSpec

__all__ = ["resolve_device", "load_model"]


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without one is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("execution.device is 'cuda' but torch sees no CUDA device")
    return device


def load_model(spec: ModelSpec, device: str = "cpu") -> ModelAdapter:
    """Load the adapter a spec names (checkpoint or seeded random weights).

    Raises
    ------
    ModelError
        For a missing, corrupt or mismatching checkpoint, naming the file and keys.
    """
    device = resolve_device(device)
    if spec.kind == "orca":
        from screening.models.orca import load_orca

        return load_orca(spec, device)
    if spec.kind == "user":
        from screening.models.user import load_user_model

        return load_user_model(spec, device)
    return _load_corigami(spec, device)


def _load_corigami(spec: ModelSpec, device: str) -> ModelAdapter:
    from screening.models.corigami import CorigamiAdapter, CorigamiConfig

    try:
        config = CorigamiConfig(**spec.config) if spec.config else None
    except TypeError as err:
        raise ModelError(f"model.config: {err}") from None
    if spec.checkpoint is not None:
        adapter = CorigamiAdapter.from_checkpoint(
            spec.checkpoint, device=device, config=config, track_names=spec.track_names
        )
    else:
        adapter = CorigamiAdapter.random_init(
            config or CorigamiConfig(), seed=spec.random_seed, device=device, track_names=spec.track_names
        )
    if spec.name:
        adapter.name = spec.name
    return adapter

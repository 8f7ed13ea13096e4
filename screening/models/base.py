"""The one model adapter the engine talks to.

C.Origami, Orca and users' own models all sit behind :class:`ModelAdapter`, so
perturbations, scores and attribution never see model-specific details.

Sequence enters as integer base codes (``A=0, C=1, G=2, T=3, N=4``, see
:mod:`screening.core.encode`) and tracks as float32 arrays already transformed as the
spec declares; the adapter turns them into the model's own input layout.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from screening.core.errors import ScreeningError

__all__ = ["InputLayout", "ModelAdapter", "ModelError", "WindowGeometry", "state_dict_sha256"]


def state_dict_sha256(module: torch.nn.Module) -> str:
    """sha256 over a module's state_dict (names, dtypes, shapes, bytes), for unsaved models."""
    digest = hashlib.sha256()
    for key, value in module.state_dict().items():
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class InputLayout(NamedTuple):
    """Where sequence and tracks sit in a model's input tensor ``[B, ·, ·]``.

    Attributes
    ----------
    sequence
        Channel indices of ``A, C, G, T``, in that order.
    tracks
        Channel indices of the tracks, in the adapter's ``track_names`` order.
    length_axis
        Axis of the input holding positions (1: ``[B, L, C]``, 2: ``[B, C, L]``); the
        other non-batch axis holds channels.
    n
        Channel index of a separate ``N`` channel, or ``None``.
    """

    sequence: tuple[int, int, int, int]
    tracks: tuple[int, ...]
    length_axis: int
    n: int | None = None


class PositionEncoding(NamedTuple):
    """How a position-wise model input encodes each position, for building inputs where the model runs.

    An input is position-wise when every position's channels depend only on that position's base
    and track values: the DNA channels, then the tracks in ``track_names`` order. Editing the
    sequence and encoding then commute, so a perturbed input can be spliced from the encoded
    reference (:mod:`screening.compute.assemble`) instead of re-encoded from its edited codes.

    Attributes
    ----------
    table
        ``float32 [5, n_dna]``: the DNA channels of each base code (A0 C1 G2 T3 N4), exactly what
        :meth:`ModelAdapter.build_input` writes for it.
    length_axis
        Axis of the input holding positions (1: ``[B, L, C]``, 2: ``[B, C, L]``).
    """

    table: np.ndarray
    length_axis: int


class ModelError(ScreeningError, ValueError):
    """A model, checkpoint or declaration that cannot be used."""


@dataclass(frozen=True)
class WindowGeometry:
    """Geometry of one model input window and its output map.

    Attributes
    ----------
    window_length
        Input length in bp.
    bin_size
        Output bin size in bp.
    n_bins
        Output map is ``n_bins × n_bins``.
    map_offset
        bp from the window start to the first output bin (0 when the map
        covers the whole window).
    """

    window_length: int
    bin_size: int
    n_bins: int
    map_offset: int = 0


class ModelAdapter(ABC):
    """Uniform face of a sequence(+tracks) → contact-map model.

    Subclasses set :attr:`geometry`, :attr:`track_names`, :attr:`symmetric` and
    implement :meth:`build_input` and :meth:`forward`.
    """

    name: str = "model"
    geometry: WindowGeometry
    track_names: tuple[str, ...] = ()
    symmetric: bool = False
    checksum: str = ""
    precision: str = "fp32"  # autocast precision of predict (see screening.models.precision.configure_adapter)
    overlap: bool = False  # build the next batch's input while one runs (screening.compute.prefetch)

    def __init__(self, module: torch.nn.Module, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()

    @abstractmethod
    def build_input(self, codes: np.ndarray, tracks: np.ndarray | None) -> torch.Tensor:
        """Turn a batch of windows into the model's input tensor.

        Parameters
        ----------
        codes
            ``uint8 [B, window_length]`` base codes.
        tracks
            ``float32 [B, n_tracks, window_length]`` transformed tracks, or
            ``None`` for sequence-only models.
        """

    @abstractmethod
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Differentiable forward pass: input tensor → ``[B, n_bins, n_bins]`` maps."""

    @torch.no_grad()
    def predict(self, codes: np.ndarray, tracks: np.ndarray | None) -> np.ndarray:
        """Batched inference: base codes (+ tracks) → float32 ``[B, n_bins, n_bins]``."""
        return self.predict_inputs(self.build_input(codes, tracks))

    @torch.no_grad()
    def predict_inputs(self, inputs: torch.Tensor) -> np.ndarray:
        """Forward of built inputs under :attr:`precision` (CUDA autocast), as float32 numpy maps."""
        return self.predict_maps(inputs).cpu().numpy()

    @torch.no_grad()
    def predict_maps(self, inputs: torch.Tensor) -> torch.Tensor:
        """:meth:`predict_inputs` with the maps left where the model ran: float32 ``[B, n_bins, n_bins]`` on
        the device (the engine scores them there, :mod:`screening.maps.score_torch`); nothing is synchronised."""
        from screening.models.precision import autocast

        with autocast(self.device, self.precision):
            maps = self.forward(inputs)
        return maps.float()

    def position_encoding(self) -> PositionEncoding | None:
        """The input's encoding per position, if it is position-wise (:class:`PositionEncoding`).

        ``None`` (the default) means inputs are only built by :meth:`build_input` from whole
        windows; adapters whose input is one-hot DNA then track channels return their encoding,
        and the engine then builds perturbed inputs on the device from the encoded reference.
        """
        return None

    def host_input(self, codes: np.ndarray, tracks: np.ndarray | None) -> torch.Tensor:
        """The model input built on the host, for pinned asynchronous copies (:mod:`screening.compute.prefetch`).

        The default is :meth:`build_input`, which may already place it on the device.
        """
        return self.build_input(codes, tracks)

    def predict_near(
        self, reference_codes: np.ndarray, reference_tracks: np.ndarray | None, codes: np.ndarray, tracks: np.ndarray | None
    ) -> np.ndarray:
        """Maps of windows that differ from one reference window by substitutions (mutagenesis).

        Models that can reuse the reference's computation override this (Orca recomputes
        only the part of its convolutional encoder a substitution reaches); the default
        predicts every window in full. Either way the result equals :meth:`predict`.

        Parameters
        ----------
        reference_codes, reference_tracks
            ``uint8 [L]`` and ``float32 [n_tracks, L]`` (or ``None``) of the reference window.
        codes, tracks
            ``[B, L]`` and ``[B, n_tracks, L]`` (or ``None``): windows of the same length.
        """
        return self.predict(codes, tracks)

    def first_sequence_layer(self) -> torch.nn.Conv1d | None:
        """The convolution that reads the one-hot DNA, whose filters ``screening filters`` reads as motifs.

        Default: the first ``nn.Conv1d`` of :attr:`module` (in ``named_modules`` order) whose
        ``in_channels`` equals the DNA channels of :meth:`position_encoding`; ``None`` when the
        input is not position-wise or no such convolution exists (e.g. TorchScript). Adapters
        whose DNA convolution is elsewhere override it.
        """
        encoding = self.position_encoding()
        if encoding is None:
            return None
        n_dna = int(np.asarray(encoding.table).shape[1])
        for module in self.module.modules():
            if isinstance(module, torch.nn.Conv1d) and module.in_channels == n_dna:
                return module
        return None

    def attention_modules(self) -> list[tuple[str, torch.nn.MultiheadAttention]]:
        """The model's attention layers, in order, for ``screening attention`` (named as in ``named_modules``).

        Default: every ``nn.MultiheadAttention`` of :attr:`module`; empty for a model without attention.
        """
        return [(name, m) for name, m in self.module.named_modules() if isinstance(m, torch.nn.MultiheadAttention)]

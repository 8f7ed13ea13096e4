"""Model inputs assembled where the model runs, from encoded reference spans and small edits.

A perturbed input differs from its reference window only by an edit: a segment replaced
(:func:`screening.perturb.edits.apply_edit`) and, for a net deletion, downstream sequence or
padding shifted in. For a position-wise input (:class:`~screening.models.base.PositionEncoding`:
each position's channels depend on its base and track values only), encoding and editing
commute. So instead of editing the codes of every perturbation on the host and encoding each
edited window again, the loaded span is encoded once on the device (a table lookup of its base
codes, its tracks appended) and each input of a batch is three slice copies of it there: the
head before the edit, the encoded replacement (a few bases), the shifted tail, and the encoded
padding. What crosses from the host per perturbation is its edit: offsets and the replaced bases.

The result equals ``adapter.build_input`` of the edited window exactly (the same float32 values;
tested for every kind and adapter).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import numpy as np
import torch

from screening.core.encode import N_CODE
from screening.models.base import ModelAdapter, PositionEncoding
from screening.perturb.edits import check_edit

__all__ = ["EditedInput", "InputAssembler"]


@dataclass(frozen=True)
class EditedInput:
    """One model input as an edit of a loaded span (what :func:`~screening.perturb.edits.apply_edit` takes).

    The window starts at ``start`` in ``codes`` (``uint8 [S]``) and ``tracks`` (``float32 [T, S]`` or
    ``None``), which may hold the windows of several perturbations (read once); relative to the window
    start, ``[offset, offset + ref_length)`` is replaced by ``alt_codes`` (and ``alt_tracks``, ``None``:
    zeros); the unedited window is ``offset = length``, ``ref_length = 0``, no ``alt_codes``.
    """

    codes: np.ndarray
    tracks: np.ndarray | None
    offset: int
    ref_length: int
    alt_codes: np.ndarray
    alt_tracks: np.ndarray | None
    length: int
    padding: str = "zero"
    start: int = 0

    def window_codes(self) -> np.ndarray:
        """``codes`` from the window start on (a view)."""
        return self.codes[self.start :]

    def window_tracks(self) -> np.ndarray | None:
        """``tracks`` from the window start on (a view), or ``None``."""
        return None if self.tracks is None else self.tracks[:, self.start :]

    def unedited(self) -> "EditedInput":
        """This input's window without the edit: its reference."""
        return replace(self, offset=self.length, ref_length=0, alt_codes=np.zeros(0, np.uint8), alt_tracks=None)


class InputAssembler:
    """Builds batches of model inputs on the adapter's device from :class:`EditedInput` descriptions.

    Parameters
    ----------
    adapter
        A model whose :meth:`~screening.models.base.ModelAdapter.position_encoding` is not ``None``.
    buffers
        Input buffers reused in turn (one batch each): 1 when batches are used one at a time, 3 when
        a background thread builds batches ahead (one in the forward pass, one queued, one being built).
    """

    def __init__(self, adapter: ModelAdapter, buffers: int = 1) -> None:
        encoding = adapter.position_encoding()
        if encoding is None:
            raise ValueError(f"{type(adapter).__name__} has no position-wise input encoding")
        self.device = adapter.device
        self.encoding: PositionEncoding = encoding
        self.table = torch.as_tensor(np.asarray(encoding.table, np.float32), device=self.device)
        self.axis = encoding.length_axis - 1  # the positions' axis within one input
        self.buffers: list[torch.Tensor | None] = [None] * max(1, buffers)
        self._turn = 0
        # the span of the previous batch's last input, encoded: consecutive batches of a shared window reuse it
        self._last: tuple[np.ndarray, torch.Tensor] | None = None

    def encode(self, codes: np.ndarray, tracks: np.ndarray | None) -> torch.Tensor:
        """The input channels of a span: ``[S, C]`` (or ``[C, S]``) on the device."""
        index = torch.from_numpy(np.ascontiguousarray(codes)).to(self.device).long()
        n_dna, n_tracks = self.table.shape[1], 0 if tracks is None else len(tracks)
        shape = (len(codes), n_dna + n_tracks) if self.axis == 0 else (n_dna + n_tracks, len(codes))
        out = torch.empty(shape, dtype=torch.float32, device=self.device)
        if self.axis == 0:  # one row lookup per position straight into the output (no intermediate one-hot)
            torch.index_select(_widened(self.table, n_tracks), 0, index, out=out)
        else:
            torch.index_select(self.table.T.contiguous(), 1, index, out=out[:n_dna])
        if n_tracks:
            values = torch.from_numpy(np.ascontiguousarray(tracks, np.float32)).to(self.device)
            _along(out, 1 - self.axis, n_dna, n_tracks).copy_(values.T if self.axis == 0 else values)
        return out

    def build(self, inputs: list[EditedInput]) -> torch.Tensor:
        """The batch ``[B, L, C]`` (or ``[B, C, L]``) of model inputs, in order.

        Each distinct span is encoded once for the batch and dropped after its last use.

        Raises
        ------
        ValueError
            For an edit :func:`~screening.perturb.edits.apply_edit` would refuse.
        """
        uses: dict[int, int] = {}
        for item in inputs:
            uses[id(item.codes)] = uses.get(id(item.codes), 0) + 1
        out = self._buffer(inputs)
        encoded: dict[int, torch.Tensor] = {}
        if self._last is not None and id(self._last[0]) in uses:
            encoded[id(self._last[0])] = self._last[1]
        self._last = None
        last = inputs[-1].codes
        for row, item in enumerate(inputs):
            key = id(item.codes)
            if key not in encoded:
                encoded[key] = self.encode(item.codes, item.tracks)
            self._splice(out[row], encoded[key], item)
            uses[key] -= 1
            if not uses[key]:  # memory: a span's encoding lives until its last use (or the next batch's first)
                if item.codes is last:
                    self._last = (last, encoded[key])
                del encoded[key]
        return out

    def _buffer(self, inputs: list[EditedInput]) -> torch.Tensor:
        """A reused buffer for this batch (a view of its first rows when the batch is short)."""
        first = inputs[0]
        channels = self.table.shape[1] + (0 if first.tracks is None else len(first.tracks))
        shape = (len(inputs), first.length, channels) if self.axis == 0 else (len(inputs), channels, first.length)
        slot = self._turn % len(self.buffers)
        self._turn += 1
        buffer = self.buffers[slot]
        if buffer is None or buffer.shape[0] < shape[0] or buffer.shape[1:] != shape[1:]:
            buffer = self.buffers[slot] = torch.empty(shape, dtype=torch.float32, device=self.device)
        return buffer[: shape[0]]

    def _splice(self, out: torch.Tensor, encoded: torch.Tensor, item: EditedInput) -> None:
        """``out = encode(apply_edit(item))``: head, replacement, shifted tail, then padding."""
        alt_codes = np.asarray(item.alt_codes)
        check_edit(item.window_codes(), item.window_tracks(), item.offset, item.ref_length, alt_codes, item.alt_tracks,
                   item.length, item.padding)
        length, offset, base = item.length, item.offset, item.start
        head = min(offset, length)
        _along(out, self.axis, 0, head).copy_(_along(encoded, self.axis, base, head))
        if offset >= length:
            return
        alt_end = min(offset + len(alt_codes), length)
        if alt_end > offset:
            alt_tracks = item.alt_tracks
            if item.tracks is not None and alt_tracks is None:
                alt_tracks = np.zeros((len(item.tracks), len(alt_codes)), np.float32)  # inserted bases: no signal
            alt = self.encode(alt_codes[: alt_end - offset], None if alt_tracks is None else alt_tracks[:, : alt_end - offset])
            _along(out, self.axis, offset, alt_end - offset).copy_(alt)
        source, n_tail = offset + item.ref_length, length - alt_end
        pad_from = length if item.padding == "zero" else len(item.codes) - base  # as apply_edit: N/0 past the window
        n_real = min(n_tail, max(0, pad_from - source))
        if n_real:
            _along(out, self.axis, alt_end, n_real).copy_(_along(encoded, self.axis, base + source, n_real))
        if n_tail > n_real:
            _along(out, self.axis, alt_end + n_real, n_tail - n_real).copy_(self._padding(item, n_tail - n_real))

    def _padding(self, item: EditedInput, n: int) -> torch.Tensor:
        fill = self.encode(np.array([N_CODE], np.uint8), None if item.tracks is None else np.zeros((len(item.tracks), 1), np.float32))
        return fill.expand(n, -1) if self.axis == 0 else fill.expand(-1, n)


def _widened(table: torch.Tensor, n_tracks: int) -> torch.Tensor:
    """The DNA table with ``n_tracks`` zero columns, so one lookup fills a whole input row."""
    return torch.cat([table, table.new_zeros(len(table), n_tracks)], dim=1) if n_tracks else table


def _along(x: torch.Tensor, axis: int, start: int, length: int) -> torch.Tensor:
    return x.narrow(axis, start, length)

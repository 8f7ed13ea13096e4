"""C.Origami (Tan et al. 2023): ``ConvTransModel`` and its adapter.

The module tree mirrors the original ``tanjimin/C.Origami`` code attribute by
attribute so that its Lightning checkpoints load unchanged (696 state_dict
entries for the released size), while every size is set by
:class:`CorigamiConfig` so that small demo models share the same code path.

Input is ``[B, L, 5 + n_tracks]``, length first: one-hot DNA in the order
A, T, C, G, N, then the genomic tracks (CTCF, ATAC for the released model).
Output is ``[B, n_bins, n_bins]`` float32, log(1 + Hi-C), not symmetrised.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from screening.core.encode import one_hot
from screening.models.base import ModelAdapter, ModelError, PositionEncoding, WindowGeometry, state_dict_sha256
from screening.models.checkpoint import PREFIX, describe_misfit, file_sha256, read_checkpoint
from screening.models.precision import strict_float32_cuda

__all__ = [
    "CorigamiConfig", "ConvTransModel", "CorigamiAdapter", "DNA_ORDER", "N_DNA_CHANNELS", "check_state_dict",
    "infer_corigami_config", "load_corigami_checkpoint", "pairwise_conv2d", "save_corigami_checkpoint",
]

DNA_ORDER = "ATCGN"
"""C.Origami's one-hot channel order (N has its own channel)."""
N_DNA_CHANNELS = len(DNA_ORDER)

_DEFAULT_WIDTHS = (16, 16, 16, 16, 32, 32, 64, 64, 64, 64, 128, 128)


@dataclass(frozen=True)
class CorigamiConfig:
    """Size of a :class:`ConvTransModel`; defaults are the released model.

    Attributes
    ----------
    num_genomic_features
        Number of track channels after the 5 DNA channels.
    mid_hidden
        Width of the encoder output and of the transformer (``d_model``).
    stem_width
        Output channels of each trunk's first (stride-2, k=3) convolution.
    block_widths
        Output channels of each encoder block, per trunk; every block halves the
        length, so the total stride is ``2 ** (1 + len(block_widths))``.
    kernel_size
        Kernel of the encoder blocks' convolutions.
    n_layers, n_heads, ff_hidden, dropout
        Pre-norm transformer: layers, attention heads, feed-forward width,
        dropout (training only).
    decoder_hidden, decoder_blocks
        2-D decoder width and number of dilated residual blocks (dilation
        ``2 ** (i + 1)``).
    window_length
        Input length in bp; must be a multiple of the encoder stride.
    """

    num_genomic_features: int = 2
    mid_hidden: int = 256
    stem_width: int = 16
    block_widths: tuple[int, ...] = _DEFAULT_WIDTHS
    kernel_size: int = 5
    n_layers: int = 8
    n_heads: int = 8
    ff_hidden: int = 512
    dropout: float = 0.1
    decoder_hidden: int = 256
    decoder_blocks: int = 5
    window_length: int = 2_097_152

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_widths", tuple(int(w) for w in self.block_widths))
        if not self.block_widths:
            raise ModelError("CorigamiConfig: block_widths must not be empty")
        if self.num_genomic_features < 1:
            raise ModelError("CorigamiConfig: num_genomic_features must be >= 1")
        if self.mid_hidden % self.n_heads:
            raise ModelError(f"CorigamiConfig: mid_hidden {self.mid_hidden} is not divisible by n_heads {self.n_heads}")
        if self.window_length <= 0 or self.window_length % self.bin_size:
            raise ModelError(
                f"CorigamiConfig: window_length {self.window_length} is not a positive multiple of the "
                f"encoder stride {self.bin_size} (= 2 ** (1 + len(block_widths)))"
            )

    @property
    def bin_size(self) -> int:
        """bp per output bin: the encoder's total stride."""
        return 2 ** (1 + len(self.block_widths))

    @property
    def n_bins(self) -> int:
        """Output map side."""
        return self.window_length // self.bin_size

    @property
    def n_channels(self) -> int:
        """Input channels: 5 DNA + tracks."""
        return N_DNA_CHANNELS + self.num_genomic_features


# --------------------------------------------------------------------------- encoder


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(c_in, c_out, kernel, stride, kernel // 2), nn.BatchNorm1d(c_out), nn.ReLU())


class _DownBlock(nn.Module):
    """Stride-2 conv (``scale``) then a residual pair of convs (``res``)."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.scale = _conv_bn_relu(c_in, c_out, kernel, 2)
        self.res = nn.Sequential(
            nn.Conv1d(c_out, c_out, kernel, padding=pad),
            nn.BatchNorm1d(c_out),
            nn.ReLU(),
            nn.Conv1d(c_out, c_out, kernel, padding=pad),
            nn.BatchNorm1d(c_out),
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.scale(x)
        return self.relu(self.res(x) + x)


def _trunk(cfg: CorigamiConfig) -> nn.Sequential:
    widths_in = (cfg.stem_width, *cfg.block_widths[:-1])
    return nn.Sequential(*(_DownBlock(i, o, cfg.kernel_size) for i, o in zip(widths_in, cfg.block_widths)))


class _SplitEncoder(nn.Module):
    """Separate 1-D trunks for DNA and tracks, concatenated and mixed by a 1×1 conv."""

    def __init__(self, cfg: CorigamiConfig) -> None:
        super().__init__()
        self.conv_start_seq = _conv_bn_relu(N_DNA_CHANNELS, cfg.stem_width, 3, 2)
        self.conv_start_epi = _conv_bn_relu(cfg.num_genomic_features, cfg.stem_width, 3, 2)
        self.res_blocks_seq = _trunk(cfg)
        self.res_blocks_epi = _trunk(cfg)
        self.conv_end = nn.Conv1d(2 * cfg.block_widths[-1], cfg.mid_hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = self.res_blocks_seq(self.conv_start_seq(x[:, :N_DNA_CHANNELS]))
        epi = self.res_blocks_epi(self.conv_start_epi(x[:, N_DNA_CHANNELS:]))
        return self.conv_end(torch.cat([seq, epi], dim=1))


# --------------------------------------------------------------------------- transformer


class _PositionalEncoding(nn.Module):
    """Sinusoid table kept as the original's ``(max_len, 1, d)`` buffer.

    The original adds ``pe[:x.size(0)]`` to a batch-first tensor, i.e. the entry
    of the *batch index* to every bin; released results were made at batch size
    1, so every sample gets ``pe[0]`` here, independent of its batch position.
    """

    def __init__(self, hidden: int, max_len: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, hidden, 2) * (-math.log(10000.0) / hidden))
        pe = torch.zeros(max_len, 1, hidden)
        pe[:, 0, 0::2] = torch.sin(position * div_term)
        pe[:, 0, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[0])


class _PreNormLayer(nn.Module):
    """Pre-LN transformer layer with ``nn.TransformerEncoderLayer``'s attribute names."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d, ff)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ff, d)
        self.norm1 = nn.LayerNorm(d, eps=1e-5)
        self.norm2 = nn.LayerNorm(d, eps=1e-5)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        h, _ = self.self_attn(h, h, h, need_weights=False)
        x = x + self.dropout1(h)
        h = self.linear2(self.dropout(torch.relu(self.linear1(self.norm2(x)))))
        return x + self.dropout2(h)


class _LayerStack(nn.Module):
    def __init__(self, cfg: CorigamiConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            _PreNormLayer(cfg.mid_hidden, cfg.n_heads, cfg.ff_hidden, cfg.dropout) for _ in range(cfg.n_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x  # no final norm, as in the original


class _AttnModule(nn.Module):
    def __init__(self, cfg: CorigamiConfig) -> None:
        super().__init__()
        self.pos_encoder = _PositionalEncoding(cfg.mid_hidden, cfg.n_bins, cfg.dropout)
        self.module = _LayerStack(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(self.pos_encoder(x))


# --------------------------------------------------------------------------- decoder


class _DilatedBlock(nn.Module):
    def __init__(self, hidden: int, dilation: int) -> None:
        super().__init__()
        self.res = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm2d(hidden),
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.res(x) + x)


class _DecoderStem(nn.Sequential):
    """The decoder's ``Conv2d(2d → hidden, 3 × 3) + BatchNorm2d + ReLU`` (the original's ``conv_start``).

    On the pairwise map ``[B, 2d, n, n]`` it runs as the plain ``nn.Sequential``; on the bin
    features ``[B, d, n]`` the convolution is :func:`pairwise_conv2d` (exact, borders included)
    and BatchNorm and ReLU follow on the same tensor. Still one ``nn.Sequential`` block (same
    state_dict names; activation checkpointing wraps it, now with the small features as input).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            return super().forward(x)
        conv, *rest = self
        if not isinstance(conv, nn.Conv2d):
            raise ModelError(f"decoder stem starts with {type(conv).__name__}, not Conv2d")
        x = pairwise_conv2d(x, conv)
        for layer in rest:
            x = layer(x)
        return x


class _Decoder(nn.Module):
    def __init__(self, cfg: CorigamiConfig) -> None:
        super().__init__()
        hidden = cfg.decoder_hidden
        self.conv_start = _DecoderStem(
            nn.Conv2d(2 * cfg.mid_hidden, hidden, 3, 1, 1), nn.BatchNorm2d(hidden), nn.ReLU()
        )
        self.res_blocks = nn.Sequential(*(_DilatedBlock(hidden, 2 ** (i + 1)) for i in range(cfg.decoder_blocks)))
        self.conv_end = nn.Conv2d(hidden, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Bin features ``[B, d, n]`` (factorised first conv) or the pairwise map ``[B, 2d, n, n]``
        (:func:`_pairwise`, the original) → ``[B, 1, n, n]``; the same maps to float rounding."""
        return self.conv_end(self.res_blocks(self.conv_start(x)))


def _tap_ranges(n: int, kernel: int, padding: int, dilation: int) -> list[tuple[int, list[int]]]:
    """``(output index, taps that fall in the zero padding there)`` for every output index that has any.

    Tap ``t`` at output ``i`` reads input ``i + t * dilation - padding``; at most
    ``2 * ceil(padding / dilation)`` indices (all of them on tiny maps) have taps outside ``[0, n)``.
    """
    m = n + 2 * padding - dilation * (kernel - 1)
    out = []
    for i in range(max(m, 0)):
        outside = [t for t in range(kernel) if not 0 <= i + t * dilation - padding < n]
        if outside:
            out.append((i, outside))
    return out


def _factorisable(conv: nn.Conv2d) -> bool:
    return (
        conv.stride == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


def pairwise_conv2d(features: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(_pairwise(features))`` exactly, as two 1-D convolutions broadcast and added.

    Channels ``[:d]`` of the pairwise map hold bin j (constant along rows), channels ``[d:]``
    bin i (constant along columns). For a stride-1 zero-padded convolution with weight
    ``W = [Wc | Wr]`` of kernel ``kh × kw``::

        y[o, i, j] = bias[o] + sum_{ki valid at i} C[ki, o, j] + sum_{kj valid at j} R[kj, o, i]

    where ``C[ki] = conv1d(f, Wc[:, :, ki, :])`` runs over columns, ``R[kj] =
    conv1d(f, Wr[:, :, :, kj])`` over rows, and a tap is valid where it reads inside the map
    (not the zero padding). Away from the borders every tap is valid: the row and column sums
    are broadcast and added; on the few border rows (columns) the taps that fall in the
    padding are subtracted again. For C.Origami's first decoder convolution (512 → 256,
    3 × 3 on 256 × 256) this replaces 154.6 GFLOP by 0.6 GFLOP and never builds the
    ``[B, 512, n, n]`` map; the result equals the 2-D convolution up to float rounding
    (summation order). Differentiable; the weights are ``conv``'s own.

    Parameters
    ----------
    features
        Bin features ``[B, d, n]``.
    conv
        ``Conv2d(2d, O, (kh, kw))`` with stride 1, groups 1, zero padding, any dilation.

    Returns
    -------
    torch.Tensor
        ``[B, O, m_h, m_w]``, in ``conv.weight``'s memory format (channels-last when the module
        was converted to it).
    """
    padding = conv.padding
    if isinstance(padding, str) or not _factorisable(conv):
        return conv(_pairwise(features))
    b, d, n = features.shape
    weight = conv.weight
    o, c2, kh, kw = weight.shape
    if c2 != 2 * d:
        raise ModelError(f"pairwise_conv2d: {c2} input channels for {d}-channel features")
    (ph, pw), (dh, dw) = padding, conv.dilation
    w_col, w_row = weight[:, :d], weight[:, d:]
    # one conv1d per kernel row (column features) and per kernel column (row features): [B, k, O, m]
    col = F.conv1d(features, w_col.permute(2, 0, 1, 3).reshape(kh * o, d, kw), padding=pw, dilation=dw)
    row = F.conv1d(features, w_row.permute(3, 0, 1, 2).reshape(kw * o, d, kh), padding=ph, dilation=dh)
    col, row = col.view(b, kh, o, -1), row.view(b, kw, o, -1)
    col_all = col.sum(1)  # [B, O, m_w]: every row tap valid
    row_all = row.sum(1)  # [B, O, m_h]: every column tap valid
    if conv.bias is not None:
        row_all = row_all + conv.bias[:, None].to(row_all.dtype)  # autocast: stay in the convs' dtype
    if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        # built as [B, m_h, m_w, O]: the NCHW view is channels-last contiguous
        col_t, row_t = col_all.transpose(1, 2).contiguous(), row_all.transpose(1, 2).contiguous()
        out = (col_t[:, None] + row_t[:, :, None]).permute(0, 3, 1, 2)
    else:
        out = col_all[:, :, None, :] + row_all[:, :, :, None]
    for i, taps in _tap_ranges(n, kh, ph, dh):  # border rows: drop row taps that read the padding
        out[:, :, i, :] -= col[:, taps].sum(1)
    for j, taps in _tap_ranges(n, kw, pw, dw):  # border columns: drop column taps that read the padding
        out[:, :, :, j] -= row[:, taps].sum(1)
    return out


# --------------------------------------------------------------------------- model


class ConvTransModel(nn.Module):
    """C.Origami's ``ConvTransModel``: split 1-D encoder → transformer → pairwise 2-D decoder.

    Parameters
    ----------
    config
        Model size; :class:`CorigamiConfig` defaults give the released model.
    factorised_decoder
        Run the decoder's first convolution as :func:`pairwise_conv2d` on the bin features
        (default: 154.6 of the released model's 953 GFLOP and its ``[B, 512, 256, 256]``
        pairwise map never computed) instead of a 2-D convolution of the pairwise map (the
        original code, kept as the reference). Same parameters, same state_dict, same maps
        to float rounding; a plain attribute, may be switched at any time.
    """

    def __init__(self, config: CorigamiConfig | None = None, factorised_decoder: bool = True) -> None:
        super().__init__()
        self.config = config or CorigamiConfig()
        self.factorised_decoder = factorised_decoder
        # registration order encoder, decoder, attn matches the original state_dict order
        self.encoder = _SplitEncoder(self.config)
        self.decoder = _Decoder(self.config)
        self.attn = _AttnModule(self.config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, L, 5 + n_tracks]`` inputs to ``[B, n_bins, n_bins]`` float32 maps."""
        x = self.encoder(x.transpose(1, 2).contiguous().float())  # [B, d, n]
        x = self.attn(x.transpose(1, 2)).transpose(1, 2)  # transformer runs batch-first [B, n, d]
        return self.decoder(x if self.factorised_decoder else _pairwise(x)).squeeze(1)


def _pairwise(x: torch.Tensor) -> torch.Tensor:
    """``[B, d, n]`` → ``[B, 2d, n, n]``: channels ``[:d]`` hold bin j (column), ``[d:]`` bin i (row)."""
    n = x.size(-1)
    cols = x.unsqueeze(2).expand(-1, -1, n, -1)
    rows = x.unsqueeze(3).expand(-1, -1, -1, n)
    return torch.cat([cols, rows], dim=1)


# --------------------------------------------------------------------------- adapter


def _default_track_names(n: int) -> tuple[str, ...]:
    return ("ctcf", "atac") if n == 2 else tuple(f"track{i}" for i in range(n))


class CorigamiAdapter(ModelAdapter):
    """:class:`~screening.models.base.ModelAdapter` for :class:`ConvTransModel`.

    Parameters
    ----------
    module
        The model; it is moved to ``device`` and put in eval mode.
    device
        Torch device for inference.
    track_names
        Names of the track channels in input order; default ``("ctcf", "atac")``
        for 2 tracks.
    """

    symmetric = False

    def __init__(
        self,
        module: ConvTransModel,
        device: str | torch.device = "cpu",
        track_names: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(module, device)
        self.config: CorigamiConfig = module.config
        n_tracks = self.config.num_genomic_features
        names = tuple(track_names) if track_names is not None else _default_track_names(n_tracks)
        if len(names) != n_tracks:
            raise ModelError(f"{len(names)} track names {names} for a model with {n_tracks} tracks")
        self.track_names = names
        self.geometry = WindowGeometry(self.config.window_length, self.config.bin_size, self.config.n_bins)
        self.name = "corigami"
        if self.device.type == "cuda":
            strict_float32_cuda()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        config: CorigamiConfig | None = None,
        track_names: tuple[str, ...] | None = None,
    ) -> CorigamiAdapter:
        """Load a C.Origami Lightning checkpoint or bare state_dict safely.

        Parameters
        ----------
        path
            Checkpoint file.
        device
            Torch device for inference.
        config
            Expected size; inferred from tensor shapes when ``None``.
        track_names
            See :class:`CorigamiAdapter`.

        Raises
        ------
        ModelError
            Unreadable, unsafe or non-checkpoint file, or weights that do not
            fit the architecture.
        """
        state, cfg = load_corigami_checkpoint(path, config)
        model = ConvTransModel(cfg)
        model.load_state_dict(state, strict=True)
        adapter = cls(model, device, track_names)
        adapter.checksum = file_sha256(path)
        adapter.name = f"corigami:{Path(path).name}"
        return adapter

    @classmethod
    def random_init(
        cls,
        config: CorigamiConfig | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        track_names: tuple[str, ...] | None = None,
    ) -> CorigamiAdapter:
        """Randomly initialised model (PyTorch default init) for tests and toy models.

        The global RNG state is left untouched; ``checksum`` is the sha256 of
        the weights (:func:`state_dict_sha256`).
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ConvTransModel(config)
        adapter = cls(model, device, track_names)
        adapter.checksum = state_dict_sha256(model)
        adapter.name = f"corigami-random-seed{seed}"
        return adapter

    def build_input(self, codes: np.ndarray, tracks: np.ndarray | None) -> torch.Tensor:
        """Base codes and tracks → float32 ``[B, L, 5 + n_tracks]`` on the adapter's device.

        Parameters
        ----------
        codes
            ``uint8 [B, L]`` base codes (A0 C1 G2 T3 N4), ``L = window_length``.
        tracks
            ``float32 [B, n_tracks, L]``, already transformed (e.g. ATAC log1p is
            applied by the track reader, not here).
        """
        return self.host_input(codes, tracks).to(self.device)

    def host_input(self, codes: np.ndarray, tracks: np.ndarray | None) -> torch.Tensor:
        """:meth:`build_input` on the host (CPU), for pinned asynchronous copies to the device."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.config.window_length:
            raise ModelError(f"codes must be [B, {self.config.window_length}], got {codes.shape}")
        expected = (codes.shape[0], self.config.num_genomic_features, codes.shape[1])
        if tracks is None or np.shape(tracks) != expected:
            got = None if tracks is None else np.shape(tracks)
            raise ModelError(f"tracks must be {list(expected)} for {self.track_names}, got {got}")
        out = np.empty((*codes.shape, self.config.n_channels), dtype=np.float32)
        out[..., :N_DNA_CHANNELS] = one_hot(codes, order=DNA_ORDER, dtype=bool)  # bool temp: 4x less memory
        out[..., N_DNA_CHANNELS:] = np.asarray(tracks, dtype=np.float32).transpose(0, 2, 1)
        return torch.from_numpy(out)

    def position_encoding(self) -> PositionEncoding:
        """``[B, L, 5 + n_tracks]``: one-hot ``A, T, C, G, N``, then the tracks."""
        return PositionEncoding(one_hot(np.arange(5, dtype=np.uint8), order=DNA_ORDER), length_axis=1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Differentiable forward: ``[B, L, 5 + n_tracks]`` → float32 ``[B, n_bins, n_bins]``."""
        return self.module(inputs.to(self.device))


# --------------------------------------------------------------------------- checkpoints
# What a C.Origami checkpoint holds and how it is checked against ConvTransModel; files are read by
# screening.models.checkpoint (the one safe reader).

_CONFIG_KEY = "corigami_config"


def save_corigami_checkpoint(path: str | Path, model: ConvTransModel) -> None:
    """Save ``model`` in the original's layout plus its config (plain types, safe to load).

    The config travels as ``corigami_config`` so that fields that tensor shapes
    cannot reveal (``n_heads``, ``dropout``) survive the round trip.
    """
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(model.config).items()}
    state = {PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
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
    state, embedded = read_checkpoint(path, _CONFIG_KEY)
    if config is None:
        config = _embedded_config(embedded, path) if embedded is not None else infer_corigami_config(state)
    check_state_dict(state, config, source=f"checkpoint {path}")
    return state, config

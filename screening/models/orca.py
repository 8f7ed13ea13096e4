"""Orca's 1 Mb model (Zhou 2022): the network ``Net`` of jzhoulab/orca and its adapter.

The module tree mirrors the original's attribute by attribute, so the official
weights file ``orca_h1esc.net0.statedict`` (or ``orca_hff.…``) loads strictly:
``lconv1``..``lconv7`` and ``conv1``..``conv7`` (1-D encoder), ``lconvtwos`` and
``convtwos`` (19 + 19 dilated 2-D blocks), ``final`` (1×1 head) and ``final_1d``
(the chromatin-track head, carried by the file but not used for the map).
Every size is set by :class:`OrcaConfig`, so tiny test models share the code path.

Input is ``[B, 4, L]``: one-hot DNA in the order A, C, G, T with N = 0.25 in all
four channels. Output is ``[B, n_bins, n_bins]`` float32, exactly symmetric: the
log fold of observed over distance-expected contacts (the 1 Mb model: 250 bins
of 4 kb). Optional strand averaging: ``0.5 · fwd + 0.5 · rc[::-1, ::-1]``.

The encoder is convolutional, so a substitution changes its output only within a
receptive field computed from the architecture (:func:`encoder_reach`);
:meth:`OrcaAdapter.predict_near` recomputes just that part, level by level, and
splices it into the cached encoding of the reference window (``docs/orca.md``).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from screening.core.encode import one_hot
from screening.models.base import InputLayout, ModelAdapter, ModelError, PositionEncoding, WindowGeometry, state_dict_sha256
from screening.models.checkpoint import describe_misfit
from screening.models.precision import autocast, strict_float32_cuda

__all__ = [
    "ORCA_ALPHABET",
    "N_VALUE",
    "OrcaConfig",
    "OrcaNet",
    "OrcaAdapter",
    "encoder_reach",
    "read_orca_state_dict",
    "check_orca_state_dict",
    "load_orca",
]

ORCA_ALPHABET = "ACGT"
"""Orca's one-hot channel order (no N channel)."""
N_VALUE = 0.25
"""Value of every channel at an N (or any non-ACGT) base."""

_DILATIONS = (1, 2, 4, 8, 16, 32, 64) + (2, 4, 8, 16, 32, 64) * 2
_PREFIXES = ("module.module.", "module.")  # nn.DataParallel wrappers of the original (official file: double)
_CACHED_REFERENCES = 2  # reference windows whose encoder activations predict_near keeps


@dataclass(frozen=True)
class OrcaConfig:
    """Size of an :class:`OrcaNet`; defaults are the 1 Mb model (``Net(num_1d=32)``).

    Attributes
    ----------
    encoder_channels
        Output channels of each encoder level; level 1 runs at bp resolution.
    pools
        Max-pool size in front of each level after the first (``len(encoder_channels) - 1``
        values); their product is the bin size (4·4·5·5·5·2 = 4000).
    kernel_size
        Odd kernel of every 1-D convolution (4 per level).
    decoder_channels, decoder_hidden
        Width of the 2-D trunk and of the middle of each 2-D block (64 and 32).
    dilations
        Dilation of each 2-D block pair (``lconvtwos[i]``, ``convtwos[i]``).
    head_hidden
        Width of the 1×1 head before the single output channel.
    num_1d
        Tracks predicted by ``final_1d`` (32 for H1-ESC, 22 for HFF), or ``None`` for a
        model without that head; it is never used for the map.
    n_bins
        Output map side; the window is ``n_bins · bin_size`` bp.
    """

    encoder_channels: tuple[int, ...] = (64, 96, 128, 128, 128, 128, 128)
    pools: tuple[int, ...] = (4, 4, 5, 5, 5, 2)
    kernel_size: int = 9
    decoder_channels: int = 64
    decoder_hidden: int = 32
    dilations: tuple[int, ...] = _DILATIONS
    head_hidden: int = 5
    num_1d: int | None = 32
    n_bins: int = 250

    def __post_init__(self) -> None:
        for name in ("encoder_channels", "pools", "dilations"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        problems = []
        if not self.encoder_channels or min(self.encoder_channels) < 1:
            problems.append(f"encoder_channels {self.encoder_channels} must be positive and not empty")
        if len(self.pools) != len(self.encoder_channels) - 1 or (self.pools and min(self.pools) < 1):
            problems.append(
                f"pools {self.pools} must hold {len(self.encoder_channels) - 1} positive sizes "
                "(one per encoder level after the first)"
            )
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            problems.append(f"kernel_size {self.kernel_size} must be odd and positive")
        if not self.dilations or min(self.dilations) < 1:
            problems.append(f"dilations {self.dilations} must be positive and not empty")
        sizes = {"decoder_channels": self.decoder_channels, "decoder_hidden": self.decoder_hidden,
                 "head_hidden": self.head_hidden, "n_bins": self.n_bins}
        problems += [f"{k} must be >= 1, got {v}" for k, v in sizes.items() if v < 1]
        if self.num_1d is not None and self.num_1d < 1:
            problems.append(f"num_1d must be None or >= 1, got {self.num_1d}")
        if problems:
            raise ModelError("OrcaConfig: " + "; ".join(problems))

    @property
    def n_levels(self) -> int:
        """Encoder levels (7 for the 1 Mb model)."""
        return len(self.encoder_channels)

    @property
    def bin_size(self) -> int:
        """bp per output bin: the product of the pools."""
        return math.prod(self.pools)

    @property
    def window_length(self) -> int:
        """Input length in bp."""
        return self.n_bins * self.bin_size


# --------------------------------------------------------------------------- network


def _conv1d(c_in: int, c_out: int, kernel: int) -> nn.Conv1d:
    return nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)


def _linear_level(c_in: int, c_out: int, kernel: int, pool: int | None) -> nn.Sequential:
    """``lconvN``: [max-pool,] conv, BN, conv, BN (no non-linearity)."""
    layers: list[nn.Module] = [nn.MaxPool1d(pool, pool)] if pool else []
    layers += [_conv1d(c_in, c_out, kernel), nn.BatchNorm1d(c_out), _conv1d(c_out, c_out, kernel), nn.BatchNorm1d(c_out)]
    return nn.Sequential(*layers)


def _relu_level(width: int, kernel: int) -> nn.Sequential:
    """``convN``: conv, BN, ReLU, conv, BN, ReLU (ReLUs not in place, unlike the original: same values,
    and captum's DeepLIFT needs them so)."""
    return nn.Sequential(
        _conv1d(width, width, kernel), nn.BatchNorm1d(width), nn.ReLU(),
        _conv1d(width, width, kernel), nn.BatchNorm1d(width), nn.ReLU(),
    )  # fmt: skip


def _conv2d(c_in: int, c_out: int, dilation: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation)


def _linear_pair(c_in: int, hidden: int, width: int, dilation: int, dropout: bool) -> nn.Sequential:
    """``lconvtwos[i]``: [dropout,] conv, BN, conv, BN."""
    layers: list[nn.Module] = [nn.Dropout(0.1)] if dropout else []
    layers += [_conv2d(c_in, hidden, dilation), nn.BatchNorm2d(hidden), _conv2d(hidden, width, dilation), nn.BatchNorm2d(width)]
    return nn.Sequential(*layers)


def _relu_pair(hidden: int, width: int, dilation: int) -> nn.Sequential:
    """``convtwos[i]``: conv, BN, ReLU, conv, BN, ReLU."""
    return nn.Sequential(
        _conv2d(width, hidden, dilation), nn.BatchNorm2d(hidden), nn.ReLU(),
        _conv2d(hidden, width, dilation), nn.BatchNorm2d(width), nn.ReLU(),
    )  # fmt: skip


class OrcaNet(nn.Module):
    """Orca's 1 Mb network: 1-D encoder → pairwise sum → dilated 2-D residual decoder → symmetric map.

    Parameters
    ----------
    config
        Model size; :class:`OrcaConfig` defaults give ``Net(num_1d=32)`` of the original,
        with the same ``state_dict`` keys (without the ``module.`` prefixes) and shapes.
    """

    def __init__(self, config: OrcaConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or OrcaConfig()
        k = cfg.kernel_size
        c_in = 4
        for level, width in enumerate(cfg.encoder_channels, start=1):  # registration order = the original's
            pool = cfg.pools[level - 2] if level > 1 else None
            setattr(self, f"lconv{level}", _linear_level(c_in, width, k, pool))
            setattr(self, f"conv{level}", _relu_level(width, k))
            c_in = width
        width, hidden = cfg.decoder_channels, cfg.decoder_hidden
        self.lconvtwos = nn.ModuleList(
            _linear_pair(c_in if i == 0 else width, hidden, width, d, dropout=i == 0) for i, d in enumerate(cfg.dilations)
        )
        self.convtwos = nn.ModuleList(_relu_pair(hidden, width, d) for d in cfg.dilations)
        self.final = nn.Sequential(
            nn.Conv2d(width, cfg.head_hidden, 1), nn.BatchNorm2d(cfg.head_hidden), nn.ReLU(), nn.Conv2d(cfg.head_hidden, 1, 1)
        )
        if cfg.num_1d:
            self.final_1d = nn.Sequential(
                nn.Conv1d(c_in, c_in, 1), nn.BatchNorm1d(c_in), nn.ReLU(), nn.Conv1d(c_in, cfg.num_1d, 1), nn.Sigmoid()
            )

    def _level(self, kind: str, level: int) -> nn.Sequential:
        return getattr(self, f"{kind}{level}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 4, L]`` one-hot → ``[B, C, n_bins]`` encoding (the original's ``out7``)."""
        lout = self.lconv1(x)
        out = self.conv1(lout)
        for level in range(2, self.config.n_levels + 1):
            lout = self._level("lconv", level)(out + lout)
            out = self._level("conv", level)(lout)
        return out

    def stage(self, level: int, u: torch.Tensor) -> torch.Tensor:
        """One encoder level on its input after pooling (level 1: the one-hot input).

        Returns the next level's input after its pooling, or the encoding for the last
        level. Chaining all levels is :meth:`encode` cut at the pools (same operations):
        :meth:`OrcaAdapter.predict_near` caches these intermediate inputs.
        """
        lconv = self._level("lconv", level)
        lout = u
        for layer in list(lconv)[1 if level > 1 else 0 :]:
            lout = layer(lout)
        out = self._level("conv", level)(lout)
        if level == self.config.n_levels:
            return out
        return self._level("lconv", level + 1)[0](out + lout)

    def decode(self, encoding: torch.Tensor) -> torch.Tensor:
        """``[B, C, n]`` encoding → ``[B, n, n]`` symmetric map."""
        cur = encoding[:, :, :, None] + encoding[:, :, None, :]
        for i, (lm, m) in enumerate(zip(self.lconvtwos, self.convtwos)):
            cur = lm(cur) if i == 0 else lm(cur) + cur  # the first block changes the width: no residual
            cur = m(cur) + cur
        cur = self.final(cur)
        return (0.5 * cur + 0.5 * cur.transpose(2, 3))[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 4, L]`` → ``[B, n_bins, n_bins]``."""
        return self.decode(self.encode(x))


# --------------------------------------------------------------------------- receptive field


def _level_plan(config: OrcaConfig) -> list[tuple[int, int]]:
    """``(trailing pool, halo)`` per level: each level's 4 convolutions reach ``halo`` positions
    each side at its own resolution; its output is pooled by the next level's pool (1 at the end)."""
    halo = 4 * (config.kernel_size // 2)
    return [(pool, halo) for pool in (*config.pools, 1)]


def encoder_reach(config: OrcaConfig) -> int:
    """bp beyond a bin's own 4 kb that can change the bin's encoding (the same on both sides).

    Walks the levels from the output back to the input: each level widens the
    interval by its convolutions' halo, each pool multiplies it. 104,016 bp for the
    1 Mb model, so a substitution changes at most ``2·⌈104016/4000⌉ + 1 = 53`` of 250 bins.
    """
    lo, hi = 0, 0  # output positions [lo, hi] of bin 0, inclusive
    for level, (pool, halo) in reversed(list(enumerate(_level_plan(config), start=1))):
        lo, hi = lo * pool - halo, hi * pool + pool - 1 + halo
    return -lo  # symmetric: hi - (bin_size - 1) == -lo


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _touched(lo: int, hi: int, pool: int, halo: int, n_out: int) -> tuple[int, int]:
    """Output positions ``[i0, i1)`` of a level whose inputs include any of ``[lo, hi)``."""
    return max(0, _ceil_div(lo - halo - pool + 1, pool)), min(n_out, (hi - 1 + halo) // pool + 1)


def _segment(i0: int, i1: int, pool: int, halo: int, n_in: int) -> tuple[int, int]:
    """Input span ``[a, b)`` that determines outputs ``[i0, i1)`` exactly, on the pool grid.

    Outputs near a segment edge see zero padding there instead of real inputs; the
    segment reaches ``halo`` (rounded up to whole pools) beyond the outputs, so those
    outputs are not used, and at the window's own edges both see the same padding.
    """
    extra = _ceil_div(halo, pool)
    return max(0, (i0 - extra) * pool), min(n_in, (i1 + extra) * pool)


# --------------------------------------------------------------------------- checkpoints


def _expected_shapes(config: OrcaConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return {k: tuple(v.shape) for k, v in OrcaNet(config).state_dict().items()}


def check_orca_state_dict(state: Mapping[str, torch.Tensor], config: OrcaConfig, source: str = "state_dict") -> None:
    """Raise :class:`ModelError` unless ``state`` fits ``OrcaNet(config)`` exactly.

    The message names missing keys, unexpected keys and every shape mismatch with
    both shapes (the first 10 of each, plus counts).
    """
    problems = describe_misfit(state, _expected_shapes(config))
    if problems:
        raise ModelError("\n".join([f"{source} does not fit OrcaNet({config})", *problems]))


def read_orca_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an Orca weights file safely (``torch.load(weights_only=True)``) and strip its prefix.

    Parameters
    ----------
    path
        A ``torch.save``d mapping of names to tensors: the official layout (keys
        ``module.module.<param>``, as ``nn.DataParallel(nn.DataParallel(Net))`` saves
        them), a single ``module.`` prefix, or bare keys; a dict with a ``state_dict``
        entry is accepted too.

    Raises
    ------
    ModelError
        Missing, truncated, corrupt or unsafe file, or one that holds no tensors.
    """
    from screening.models.checkpoint import torch_load_safe  # the one safe loader (no code in pickles)

    path = Path(path)
    obj = torch_load_safe(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not (isinstance(obj, Mapping) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())):
        raise ModelError(f"checkpoint {path}: not an Orca weights file (expected a mapping of names to tensors, got {type(obj).__name__})")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in obj):
            return {k[len(prefix) :]: v for k, v in obj.items()}
    return dict(obj)


def _config_for(state: Mapping[str, torch.Tensor], overrides: Mapping[str, object]) -> OrcaConfig:
    """The config to check ``state`` against: overrides, with ``num_1d`` read from the weights
    unless given (32 for the H1-ESC file, 22 for HFF, ``None`` without ``final_1d``)."""
    fields = dict(overrides)
    if "num_1d" not in fields:
        head = state.get("final_1d.3.weight")
        fields["num_1d"] = int(head.shape[0]) if head is not None and head.ndim == 3 else None
    return _make_config(fields)


def _make_config(fields: Mapping[str, object]) -> OrcaConfig:
    try:
        return OrcaConfig(**fields)
    except TypeError as err:
        known = list(OrcaConfig.__dataclass_fields__)
        raise ModelError(f"model.config: {err}; Orca's fields are {known}") from None


def _init_random(net: OrcaNet) -> None:
    """Weights that keep activations bounded through the deep residual stacks.

    He-normal for convolutions followed by a ReLU, fan-in normal for the others,
    zero biases; the last batch norm of every residual branch scaled to 0.2 so the
    38 residual additions of the decoder do not blow the map up (full-size maps of
    order 10; the tiny test model's of order 0.1). For smoke tests and benchmarks only.
    """
    for block in net.modules():
        if not isinstance(block, nn.Sequential):
            continue
        layers = list(block)
        for i, layer in enumerate(layers):
            if not isinstance(layer, (nn.Conv1d, nn.Conv2d)):
                continue
            relu_follows = any(isinstance(m, nn.ReLU) for m in layers[i + 1 : i + 3])
            gain = math.sqrt(2.0) if relu_follows else 1.0
            fan_in = layer.weight[0].numel()
            nn.init.normal_(layer.weight, 0.0, gain / math.sqrt(fan_in))
            nn.init.zeros_(layer.bias)
    for pair in (*net.lconvtwos[1:], *net.convtwos):
        last_norm = [m for m in pair if isinstance(m, nn.BatchNorm2d)][-1]
        nn.init.constant_(last_norm.weight, 0.2)


# --------------------------------------------------------------------------- adapter


class OrcaAdapter(ModelAdapter):
    """:class:`~screening.models.base.ModelAdapter` for :class:`OrcaNet` (sequence only).

    Parameters
    ----------
    module
        The network; moved to ``device`` and put in eval mode.
    device
        Torch device for inference.
    strand_average
        Predict the forward and the reverse-complement input in one batch and return
        ``0.5 · fwd + 0.5 · rc[::-1, ::-1]``, as Orca's ``orca_predict`` does (twice the compute).
    """

    symmetric = True
    track_names: tuple[str, ...] = ()

    def __init__(self, module: OrcaNet, device: str | torch.device = "cpu", strand_average: bool = False) -> None:
        super().__init__(module, device)
        self.config: OrcaConfig = module.config
        self.strand_average = bool(strand_average)
        self.geometry = WindowGeometry(self.config.window_length, self.config.bin_size, self.config.n_bins)
        self.input_layout = InputLayout(sequence=(0, 1, 2, 3), tracks=(), length_axis=2, n=None)
        self.name = "orca"
        self.incremental = True  # predict_near recomputes only what a substitution can reach
        self._references: OrderedDict[bytes, list[list[torch.Tensor]]] = OrderedDict()
        if self.device.type == "cuda":
            strict_float32_cuda()

    # ---- construction

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        config: Mapping[str, object] | None = None,
        strand_average: bool = False,
    ) -> OrcaAdapter:
        """Load an Orca 1 Mb weights file (official layout or bare) strictly and safely.

        Parameters
        ----------
        path
            E.g. the official ``orca_h1esc.net0.statedict``.
        device
            Torch device for inference.
        config
            :class:`OrcaConfig` fields overriding the defaults (``num_1d`` is read from
            the weights unless given).
        strand_average
            See :class:`OrcaAdapter`.

        Raises
        ------
        ModelError
            Unreadable, unsafe or non-weights file, or weights that do not fit the
            architecture (missing/unexpected keys and shape mismatches named).
        """
        from screening.models.checkpoint import file_sha256

        state = read_orca_state_dict(path)
        cfg = _config_for(state, config or {})
        check_orca_state_dict(state, cfg, source=f"checkpoint {path}")
        model = OrcaNet(cfg)
        model.load_state_dict(state, strict=True)
        adapter = cls(model, device, strand_average)
        adapter.checksum = file_sha256(path)
        adapter.name = f"orca:{Path(path).name}"
        return adapter

    @classmethod
    def random_init(
        cls,
        config: OrcaConfig | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        strand_average: bool = False,
    ) -> OrcaAdapter:
        """Seeded random weights (smoke tests, benchmarks); the global RNG is left untouched.

        ``checksum`` is the sha256 of the weights.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = OrcaNet(config)
            _init_random(model)
        adapter = cls(model, device, strand_average)
        adapter.checksum = state_dict_sha256(model)
        adapter.name = f"orca-random-seed{seed}"
        return adapter

    # ---- the adapter interface

    def build_input(self, codes: np.ndarray, tracks: np.ndarray | None) -> torch.Tensor:
        """Base codes → float32 ``[B, 4, L]`` one-hot (A, C, G, T; N = 0.25) on the adapter's device.

        Parameters
        ----------
        codes
            ``uint8 [B, L]`` base codes (A0 C1 G2 T3 N4), ``L = window_length``.
        tracks
            ``None`` (or an empty ``[B, 0, L]``): Orca takes sequence only.
        """
        return self.host_input(codes, tracks).to(self.device)

    def host_input(self, codes: np.ndarray, tracks: np.ndarray | None) -> torch.Tensor:
        """:meth:`build_input` on the host (CPU), for pinned asynchronous copies to the device."""
        codes = np.asarray(codes)
        length = self.config.window_length
        if codes.ndim != 2 or codes.shape[1] != length:
            raise ModelError(f"codes must be [B, {length}], got {codes.shape}")
        if tracks is not None and np.shape(tracks)[1:2] != (0,):
            raise ModelError(f"Orca takes sequence only, but tracks of shape {np.shape(tracks)} were given")
        encoded = one_hot(codes, order=ORCA_ALPHABET, n_value=N_VALUE)  # [B, L, 4]
        return torch.from_numpy(np.ascontiguousarray(encoded.transpose(0, 2, 1)))

    def position_encoding(self) -> PositionEncoding:
        """``[B, 4, L]``: one-hot ``A, C, G, T``, N as 0.25 in each (strand averaging happens in :meth:`forward`)."""
        return PositionEncoding(one_hot(np.arange(5, dtype=np.uint8), order=ORCA_ALPHABET, n_value=N_VALUE), length_axis=2)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Differentiable forward: ``[B, 4, L]`` → float32 ``[B, n_bins, n_bins]``.

        With strand averaging, each window and its reverse complement (positions and
        channels reversed: A↔T, C↔G) run interleaved in one batch ``[x0, rc0, x1, rc1, …]``,
        which keeps every window next to its own reverse complement: captum's DeepLIFT
        splits a batch into inputs and baselines by halves.
        """
        x = inputs.to(self.device, torch.float32)
        if not self.strand_average:
            return self.module(x)
        both = torch.stack([x, x.flip(1, 2)], dim=1).reshape(-1, *x.shape[1:])
        n = self.config.n_bins
        maps = self.module(both).reshape(x.shape[0], 2, n, n)
        return 0.5 * maps[:, 0] + 0.5 * maps[:, 1].flip(1, 2)

    # ---- incremental prediction of substitutions

    @torch.no_grad()
    def predict_near(
        self, reference_codes: np.ndarray, reference_tracks: np.ndarray | None, codes: np.ndarray, tracks: np.ndarray | None
    ) -> np.ndarray:
        """Maps of windows that differ from one reference window by substitutions.

        The encoder activations of the reference (each level's input, and the encoding)
        are cached; for each window only the span its differing bases can reach is
        recomputed, level by level on the pooling grid, and spliced into the cached
        encoding before the decoder runs on the whole map. Equal to :meth:`predict`
        within float32 rounding (tested at 1e-5); memory per cached reference is about
        100 MB for the 1 Mb model (twice with strand averaging).

        Parameters
        ----------
        reference_codes
            ``uint8 [L]`` the reference window.
        reference_tracks
            ``None`` (Orca has no tracks).
        codes
            ``uint8 [B, L]`` windows of the same length (substitutions of the reference).
        tracks
            ``None``.

        Returns
        -------
        numpy.ndarray
            float32 ``[B, n_bins, n_bins]``.
        """
        reference = np.asarray(reference_codes)
        codes = np.asarray(codes)
        self.build_input(codes[:0], tracks)  # shape checks
        if reference.shape != (self.config.window_length,) or codes.shape[1:] != reference.shape:
            raise ModelError(f"predict_near needs a reference [{self.config.window_length}] and windows of its length, "
                             f"got {reference.shape} and {codes.shape}")
        if not self.incremental:
            return self.predict(codes, tracks)
        spans = [_changed_span(row, reference) for row in codes]
        x = self.build_input(codes, None)
        with autocast(self.device, self.precision):  # as predict: execution.precision (CUDA only)
            encodings = [
                self._encode_near(stages, x.flip(1, 2) if strand else x, spans, reverse=bool(strand))
                for strand, stages in enumerate(self._reference_stages(reference))
            ]
            maps = self.module.decode(torch.cat(encodings)).float()
        if self.strand_average:
            maps = 0.5 * maps[: len(codes)] + 0.5 * maps[len(codes) :].flip(1, 2)
        return maps.cpu().numpy()

    def _reference_stages(self, reference: np.ndarray) -> list[list[torch.Tensor]]:
        """Per strand: the input of every encoder level (level 1: the one-hot) and the encoding."""
        key = hashlib.blake2b(reference.tobytes(), digest_size=16).digest()
        if key in self._references:
            self._references.move_to_end(key)
            return self._references[key]
        x = self.build_input(reference[None], None)
        strands = [x, x.flip(1, 2)] if self.strand_average else [x]
        cached = []
        for u in strands:
            stages = [u]
            for level in range(1, self.config.n_levels + 1):
                stages.append(self.module.stage(level, stages[-1]))
            cached.append(stages)
        self._references[key] = cached
        while len(self._references) > _CACHED_REFERENCES:
            self._references.popitem(last=False)
        return cached

    def _encode_near(
        self, stages: list[torch.Tensor], x: torch.Tensor, spans: list[tuple[int, int]], reverse: bool
    ) -> torch.Tensor:
        """Encodings of windows ``x`` (one strand) that differ from the cached reference in ``spans``."""
        length = self.config.window_length
        out = stages[-1].expand(len(spans), -1, -1).clone()
        groups: dict[tuple[int, int], list[int]] = {}
        for row, (lo, hi) in enumerate(spans):
            if hi > lo:  # rows equal to the reference keep its encoding
                groups.setdefault((length - hi, length - lo) if reverse else (lo, hi), []).append(row)
        for (lo, hi), rows in groups.items():  # the 3 alternatives of a base share one span: one batch
            first, last, values = self._splice_levels(stages, x[rows], lo, hi)
            out[rows, :, first:last] = values
        return out

    def _splice_levels(self, stages: list[torch.Tensor], x: torch.Tensor, lo: int, hi: int) -> tuple[int, int, torch.Tensor]:
        """Run the levels over just the positions ``[lo, hi)`` can reach; return that span of the encoding."""
        values = None
        for level, (pool, halo) in enumerate(_level_plan(self.config), start=1):
            n_in = stages[level - 1].shape[-1]
            i0, i1 = _touched(lo, hi, pool, halo, n_in // pool)
            a, b = _segment(i0, i1, pool, halo, n_in)
            if level == 1:
                segment = x[:, :, a:b]
            else:
                segment = stages[level - 1][:, :, a:b].expand(len(x), -1, -1).clone()
                segment[:, :, lo - a : hi - a] = values
            values = self.module.stage(level, segment)[:, :, i0 - a // pool : i1 - a // pool]
            lo, hi = i0, i1
        return lo, hi, values


def _changed_span(row: np.ndarray, reference: np.ndarray) -> tuple[int, int]:
    """``[first, last + 1)`` of the positions where ``row`` differs from ``reference`` (``(0, 0)``: none)."""
    changed = np.flatnonzero(row != reference)
    return (int(changed[0]), int(changed[-1]) + 1) if changed.size else (0, 0)


def load_orca(spec, device: str = "cpu") -> OrcaAdapter:
    """The adapter a spec's ``model`` section (``kind: orca``) names.

    ``model.config`` overrides :class:`OrcaConfig` fields; ``model.strand_average``
    turns on strand averaging; ``checkpoint`` or ``random_seed`` gives the weights.

    Raises
    ------
    ModelError
        Track names given (Orca takes sequence only), unknown config fields, or a
        checkpoint that is missing, unsafe or does not fit.
    """
    if spec.track_names:
        raise ModelError(
            f"model.track_names {list(spec.track_names)}: Orca takes DNA sequence only; "
            "drop track_names (and the screen's tracks)"
        )
    strand_average = bool(getattr(spec, "strand_average", False))
    if spec.checkpoint is not None:
        adapter = OrcaAdapter.from_checkpoint(spec.checkpoint, device, spec.config, strand_average)
    else:
        config = _make_config(spec.config)
        adapter = OrcaAdapter.random_init(config, spec.random_seed, device, strand_average)
    if spec.name:
        adapter.name = spec.name
    return adapter

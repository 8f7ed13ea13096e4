"""Attribution of map targets to model inputs, and seamless stitching of windows.

Tiny models only: the toy C.Origami (512 bp, 16 bins) and a float64 conv model with the
layout ``[B, C, L]`` (channels A, C, G, T, N, track).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import DeepLift, DeepLiftShap, InputXGradient, IntegratedGradients, Saliency
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from screening.interpret.attribution import (
    AttributionError,
    InputLayout,
    _baselines,
    attribute,
    checkpoint_blocks,
    gradient_correction,
    input_layout,
    stitch,
    tile_windows,
)
from screening.core.encode import one_hot
from screening.models.base import ModelAdapter, WindowGeometry
from screening.models.corigami import DNA_ORDER, CorigamiAdapter, CorigamiConfig
from screening.maps.targets import Block, Difference, Insulation, WholeMap
from helpers import TOY_CONFIG



pytestmark = pytest.mark.usefixtures("one_thread")

LOOP = Block((3, 5), (9, 12))


# --- models -------------------------------------------------------------------------------


class TinyConvNet(nn.Module):
    """Conv → ReLU → residual conv-BN → ReLU → pool → pairwise → conv2d → ReLU → 1×1 conv.

    ``variant`` "functional" uses ``torch.relu`` in the 2-D head and "reused" calls one
    ``nn.ReLU`` twice: both are outside captum's DeepLIFT rules.
    """

    def __init__(self, hidden: int = 6, bin_size: int = 8, variant: str = "modules") -> None:
        super().__init__()
        self.variant = variant
        self.conv1 = nn.Conv1d(6, hidden, 5, padding=2)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv1d(hidden, hidden, 5, padding=2)
        self.bn = nn.BatchNorm1d(hidden)
        self.relu2 = nn.ReLU()
        self.pool = nn.AvgPool1d(bin_size)
        self.conv3 = nn.Conv2d(2 * hidden, 4, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.conv4 = nn.Conv2d(4, 1, 1)
        with torch.no_grad():  # non-trivial eval-mode batch norm
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu1(self.conv1(x))
        h = (self.relu1 if self.variant == "reused" else self.relu2)(self.bn(self.conv2(h)) + h)  # residual add
        h = self.pool(h)
        n = h.shape[-1]
        pair = torch.cat([h.unsqueeze(2).expand(-1, -1, n, -1), h.unsqueeze(3).expand(-1, -1, -1, n)], 1)
        y = self.conv3(pair)
        y = torch.relu(y) if self.variant == "functional" else self.relu3(y)
        return self.conv4(y).squeeze(1)


class TinyAdapter(ModelAdapter):
    """Channel-first adapter: input ``[B, 6, L]`` = one-hot A, C, G, T, N then one track."""

    input_layout = InputLayout(sequence=(0, 1, 2, 3), tracks=(5,), length_axis=2, n=4)

    def __init__(self, module: nn.Module, dtype: torch.dtype = torch.float64, length: int = 64) -> None:
        super().__init__(module.to(dtype))
        self.dtype = dtype
        self.geometry = WindowGeometry(length, 8, length // 8)
        self.track_names = ("signal",)

    def build_input(self, codes: np.ndarray, tracks: np.ndarray | None) -> torch.Tensor:
        x = np.concatenate([one_hot(codes, order="ACGTN"), np.asarray(tracks).transpose(0, 2, 1)], axis=-1)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1))).to(self.dtype)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.module(inputs)


def _tiny(variant: str = "modules", seed: int = 0, dtype: torch.dtype = torch.float64) -> TinyAdapter:
    torch.manual_seed(seed)
    return TinyAdapter(TinyConvNet(variant=variant), dtype)


def _windows(batch: int, length: int, n_tracks: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 4, (batch, length)).astype(np.uint8)
    codes[:, 5:8] = 4  # a few N
    return codes, rng.gamma(1.0, 1.0, (batch, n_tracks, length)).astype(np.float32)


@pytest.fixture(scope="module")
def toy() -> CorigamiAdapter:
    return CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0)


@pytest.fixture(scope="module")
def toy_windows() -> tuple[np.ndarray, np.ndarray]:
    return _windows(2, TOY_CONFIG["window_length"], 2)


def _forward_fn(adapter: ModelAdapter, target):
    return lambda x: target(adapter.forward(x))


def _frozen(adapter: ModelAdapter):
    for p in adapter.module.parameters():
        p.requires_grad_(False)
    return adapter


# --- layout -------------------------------------------------------------------------------


def test_corigami_layout_maps_atcgn_to_acgt(toy):
    layout = input_layout(toy)
    assert layout == InputLayout(sequence=(0, 2, 3, 1), tracks=(5, 6), length_axis=1, n=4)
    assert [DNA_ORDER[i] for i in layout.sequence] == list("ACGT")


def test_adapter_without_layout_is_refused(toy):
    class Bare(ModelAdapter):
        def build_input(self, codes, tracks):
            raise NotImplementedError

        def forward(self, inputs):
            raise NotImplementedError

    with pytest.raises(AttributionError, match="declares no input layout"):
        attribute(Bare(nn.Linear(1, 1)), np.zeros((1, 8), np.uint8), None, WholeMap())


# --- saliency and input × gradient --------------------------------------------------------


def test_saliency_and_input_x_gradient_match_autograd_and_captum(toy, toy_windows):
    codes, tracks = toy_windows
    sal = attribute(toy, codes, tracks, LOOP, "saliency")
    ixg = attribute(toy, codes, tracks, LOOP, "input_x_gradient")
    x = toy.build_input(codes, tracks).requires_grad_(True)
    fn = _forward_fn(toy, LOOP)
    (grad,) = torch.autograd.grad(fn(x).sum(), x)
    captum_sal = Saliency(fn).attribute(x, abs=False)
    captum_ixg = InputXGradient(fn).attribute(x)
    for ours, raw, theirs in ((sal, grad, captum_sal), (ixg, grad * x, captum_ixg)):
        acgt = raw[..., [DNA_ORDER.index(b) for b in "ACGT"]].detach().numpy()
        np.testing.assert_allclose(ours.sequence, acgt, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(ours.sequence, theirs[..., [0, 2, 3, 1]].detach().numpy(), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(ours.sequence_n, raw[..., 4].detach().numpy(), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(ours.tracks, raw[..., 5:].transpose(1, 2).detach().numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(sal.target, fn(x).detach().numpy(), rtol=1e-6)
    assert sal.sequence.dtype == np.float32 and sal.sequence.shape == (2, 512, 4) and sal.tracks.shape == (2, 2, 512)
    assert sal.completeness_error is None and sal.method == "saliency"
    # input × gradient of a one-hot input lives on the reference base only; N positions get none
    ref = np.where(codes[..., None] == np.arange(4), 1.0, 0.0)
    assert np.all(ixg.sequence[ref == 0] == 0)
    assert np.all(ixg.sequence[:, 5:8] == 0)


def test_saliency_matches_finite_differences_in_float64():
    adapter = _tiny(variant="modules")
    codes, tracks = _windows(1, 64, 1)
    sal = attribute(adapter, codes, tracks, LOOP_SMALL, "saliency")
    x = adapter.build_input(codes, tracks)[0]
    eps = 1e-6
    steps = torch.eye(x.numel(), dtype=torch.float64).reshape(-1, *x.shape) * eps
    with torch.no_grad():
        fd = (LOOP_SMALL(adapter.forward(x + steps)) - LOOP_SMALL(adapter.forward(x - steps))) / (2 * eps)
    fd = fd.reshape(x.shape)  # [6, L]
    np.testing.assert_allclose(sal.sequence[0], fd[:4].T.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(sal.tracks[0], fd[5:].numpy(), rtol=1e-4, atol=1e-7)


LOOP_SMALL = Block((1, 3), (5, 7))


def test_gradient_correction_sums_to_zero_per_position(toy, toy_windows):
    sal = attribute(toy, *toy_windows, LOOP, "saliency")
    np.testing.assert_allclose(sal.sequence_corrected.sum(-1), 0.0, atol=1e-6 * np.abs(sal.sequence).max())
    np.testing.assert_allclose(sal.sequence_corrected, gradient_correction(sal.sequence))
    np.testing.assert_allclose(
        sal.sequence - sal.sequence_corrected,
        np.repeat(sal.sequence.mean(-1, keepdims=True), 4, -1),
        rtol=1e-5,
        atol=1e-6 * np.abs(sal.sequence).max(),
    )


# --- integrated gradients -----------------------------------------------------------------


def test_integrated_gradients_match_a_hand_rolled_riemann_sum():
    adapter = _tiny()
    codes, tracks = _windows(2, 64, 1)
    n = 16
    ours = attribute(adapter, codes, tracks, LOOP_SMALL, "integrated_gradients", baseline="uniform",
                     track_baseline="zeros", n_steps=n, integration="riemann_middle")  # fmt: skip
    x = adapter.build_input(codes, tracks)
    base = x.clone()
    base[:, :4], base[:, 4:] = 0.25, 0.0
    fn = _forward_fn(adapter, LOOP_SMALL)
    total = torch.zeros_like(x)
    for alpha in (np.arange(n) + 0.5) / n:  # midpoint rule
        point = (base + alpha * (x - base)).requires_grad_(True)
        total += torch.autograd.grad(fn(point).sum(), point)[0] / n
    by_hand = (total * (x - base)).numpy()
    np.testing.assert_allclose(ours.sequence, by_hand[:, :4].transpose(0, 2, 1), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(ours.tracks, by_hand[:, 5:], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(ours.sequence_n, by_hand[:, 4], rtol=1e-5, atol=1e-9)


def test_integrated_gradients_match_captum_and_its_convergence_delta(toy, toy_windows):
    codes, tracks = toy_windows
    ours = attribute(toy, codes, tracks, LOOP, "integrated_gradients", baseline="zeros", n_steps=12)
    x = toy.build_input(codes, tracks)
    base = x.clone()
    base[..., :5] = 0.0
    fn = _forward_fn(toy, LOOP)
    theirs, delta = IntegratedGradients(fn).attribute(x, base, n_steps=12, return_convergence_delta=True)
    np.testing.assert_allclose(ours.sequence, theirs[..., [0, 2, 3, 1]].numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(ours.completeness_error, delta.numpy(), atol=2e-6)
    assert ours.tracks is None  # tracks held at their values: their IG is exactly 0
    assert np.all(theirs[..., 5:].numpy() == 0)
    # small against the target, and a fraction of the (tiny, random-weight) sequence effect at 12 steps;
    # docs/attribution.md reports it by steps and baseline
    with torch.no_grad():
        change = (fn(x) - fn(base)).abs().numpy()
    error = np.abs(ours.completeness_error)
    assert np.all(error < 1e-3 * np.abs(ours.target)) and np.all(error < 0.25 * change)


def test_completeness_error_decreases_with_steps():
    adapter = _tiny()
    codes, tracks = _windows(2, 64, 1)
    errors = [
        np.abs(attribute(adapter, codes, tracks, LOOP_SMALL, "integrated_gradients", baseline="uniform",
                         n_steps=n).completeness_error).max()
        for n in (2, 16, 256)
    ]  # fmt: skip
    # ReLU kinks along the path make the decrease uneven between nearby step counts, not over decades
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05 * errors[0]


@pytest.mark.parametrize("internal_batch_size", [1, 3, 8])
def test_internal_batch_size_bounds_every_forward(internal_batch_size):
    adapter = _tiny()
    seen: list[int] = []
    forward = adapter.forward
    adapter.forward = lambda x: (seen.append(x.shape[0]), forward(x))[1]  # type: ignore[method-assign]
    codes, tracks = _windows(2, 64, 1)
    got = attribute(adapter, codes, tracks, LOOP_SMALL, "integrated_gradients", baseline="shuffle", n_shuffles=2,
                    n_steps=10, internal_batch_size=internal_batch_size)  # fmt: skip
    assert seen and max(seen) <= internal_batch_size
    del adapter.forward
    whole = attribute(adapter, codes, tracks, LOOP_SMALL, "integrated_gradients", baseline="shuffle", n_shuffles=2,
                      n_steps=10)  # fmt: skip
    np.testing.assert_allclose(got.sequence, whole.sequence, rtol=1e-6, atol=1e-9)


def test_shuffle_baseline_averages_over_shuffles_and_zero_tracks_are_attributed():
    adapter = _tiny()
    codes, tracks = _windows(2, 64, 1)
    got = attribute(adapter, codes, tracks, WholeMap(), "integrated_gradients", baseline="shuffle", n_shuffles=3,
                    track_baseline="zeros", n_steps=32)  # fmt: skip
    assert got.tracks is not None and np.abs(got.tracks).sum() > 0
    assert got.params["n_shuffles"] == 3 and got.params["baseline"] == "shuffle"
    # completeness against the mean baseline value: error small relative to the attributions
    assert np.all(np.abs(got.completeness_error) < 1e-2 * np.abs(got.sequence).sum((1, 2)))
    assert np.all(got.sequence_n == 0)  # N stays in place in a shuffle


# --- DeepLIFT -----------------------------------------------------------------------------


def test_deeplift_refuses_attention_and_names_the_modules(toy, toy_windows):
    toy.module.requires_grad_(True)
    with pytest.raises(AttributionError, match="MultiheadAttention") as err:
        attribute(toy, *toy_windows, LOOP, "deeplift")
    assert "LayerNorm" in str(err.value) and "attn.module.layers.0.self_attn" in str(err.value)
    assert all(p.requires_grad for p in toy.module.parameters())  # restored after the refusal


@pytest.mark.parametrize(
    "variant, message",
    [("functional", r"functional relu in TinyConvNet \(<top>\)"), ("reused", r"ReLU called 2 times .*\(relu1\)")],
)
def test_deeplift_refuses_functional_and_reused_nonlinearities(variant, message):
    codes, tracks = _windows(1, 64, 1)
    with pytest.raises(AttributionError, match=message):
        attribute(_tiny(variant), codes, tracks, LOOP_SMALL, "deeplift")


@pytest.mark.filterwarnings("ignore:Setting forward, backward hooks")  # captum's own, on direct calls
def test_deeplift_on_a_conv_model_matches_captum_and_is_complete():
    adapter = _tiny()
    codes, tracks = _windows(2, 64, 1)
    ours = attribute(adapter, codes, tracks, LOOP_SMALL, "deeplift", baseline="uniform", track_baseline="zeros")
    x = adapter.build_input(codes, tracks)
    base = x.clone()
    base[:, :4], base[:, 4:] = 0.25, 0.0
    net = _NetOf(adapter, LOOP_SMALL)
    theirs = DeepLift(net).attribute(x.requires_grad_(True), base).detach().numpy()
    np.testing.assert_allclose(ours.sequence, theirs[:, :4].transpose(0, 2, 1), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(ours.tracks, theirs[:, 5:], rtol=1e-6, atol=1e-12)
    # the rescale rule sums exactly to the target change through ReLUs, residual adds and batch norm
    assert np.abs(ours.completeness_error).max() < 1e-10


@pytest.mark.filterwarnings("ignore:Setting forward, backward hooks")  # captum's own, on direct calls
def test_deeplift_shap_is_captums_over_the_same_shuffles():
    adapter = _tiny()
    codes, tracks = _windows(1, 64, 1)
    ours = attribute(adapter, codes, tracks, LOOP_SMALL, "deeplift_shap", baseline="shuffle", n_shuffles=4, seed=7)
    x = adapter.build_input(codes, tracks)
    layout = input_layout(adapter)
    bases = torch.cat(list(_baselines(adapter, layout, x, codes, tracks, "shuffle", "unchanged", 4, 7)))
    theirs = DeepLiftShap(_NetOf(adapter, LOOP_SMALL)).attribute(x.requires_grad_(True), bases).detach().numpy()
    np.testing.assert_allclose(ours.sequence, theirs[:, :4].transpose(0, 2, 1), rtol=1e-6, atol=1e-12)
    assert np.abs(ours.completeness_error).max() < 1e-10


class _NetOf(nn.Module):
    def __init__(self, adapter: ModelAdapter, target) -> None:
        super().__init__()
        self.net = _frozen(adapter).module
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.target(self.net(x))


def test_option_errors(toy, toy_windows):
    with pytest.raises(AttributionError, match="unknown method"):
        attribute(toy, *toy_windows, LOOP, "occlusion")
    with pytest.raises(AttributionError, match="baseline='shuffle'"):
        attribute(toy, *toy_windows, LOOP, "deeplift_shap", baseline="zeros")
    with pytest.raises(AttributionError, match="checkpoint"):
        attribute(toy, *toy_windows, LOOP, "deeplift", checkpoint=True)
    with pytest.raises(AttributionError, match="riemann_trapezoid"):
        attribute(toy, *toy_windows, LOOP, "integrated_gradients", integration="riemann_trapezoid")
    with pytest.raises(AttributionError, match="unknown baseline"):
        attribute(toy, *toy_windows, LOOP, "integrated_gradients", baseline="gc")


# --- batching, checkpointing, model state -------------------------------------------------


@pytest.mark.parametrize(
    "method, options",
    [
        ("saliency", {}),
        ("integrated_gradients", {"baseline": "shuffle", "n_shuffles": 2, "n_steps": 8}),
        ("deeplift_shap", {"baseline": "shuffle", "n_shuffles": 2}),
    ],
)
def test_a_batch_of_two_equals_two_batches_of_one(method, options):
    adapter = _tiny()
    codes, tracks = _windows(2, 64, 1)
    target = Difference(((0, 2), (4, 6)), ((1, 3), (1, 3)))
    both = attribute(adapter, codes, tracks, target, method, **options)
    ones = [attribute(adapter, codes[i : i + 1], tracks[i : i + 1], target, method, **options) for i in range(2)]
    for name in ("sequence", "sequence_corrected", "target", "completeness_error"):
        if getattr(both, name) is None:
            continue
        joined = np.concatenate([getattr(one, name) for one in ones])
        np.testing.assert_allclose(getattr(both, name), joined, rtol=1e-6, atol=1e-12)


def test_batch_independence_on_the_toy_corigami(toy, toy_windows):
    codes, tracks = toy_windows
    both = attribute(toy, codes, tracks, Insulation(8, window=3), "saliency")
    ones = [attribute(toy, codes[i : i + 1], tracks[i : i + 1], Insulation(8, window=3), "saliency") for i in range(2)]
    np.testing.assert_allclose(both.sequence, np.concatenate([o.sequence for o in ones]), rtol=1e-5, atol=1e-9)


def test_checkpointing_gives_the_same_gradient_and_restores_the_model(toy, toy_windows):
    codes, tracks = toy_windows
    plain = attribute(toy, codes, tracks, LOOP, "saliency")
    toy.module.requires_grad_(True).train()
    ckpt = attribute(toy, codes, tracks, LOOP, "integrated_gradients", n_steps=4, checkpoint=True)
    same = attribute(toy, codes, tracks, LOOP, "integrated_gradients", n_steps=4)
    assert toy.module.training and all(m.training for m in toy.module.modules())  # mode restored
    toy.module.eval()
    assert all(p.requires_grad for p in toy.module.parameters())
    assert not any("forward" in m.__dict__ for m in toy.module.modules())
    np.testing.assert_allclose(ckpt.sequence, same.sequence, rtol=1e-5, atol=1e-9)
    again = attribute(toy, codes, tracks, LOOP, "saliency", checkpoint=["decoder.res_blocks.0"])
    np.testing.assert_allclose(again.sequence, plain.sequence, rtol=1e-5, atol=1e-9)
    blocks = checkpoint_blocks(toy.module)
    assert {"encoder.res_blocks_seq.0", "attn.module.layers.0", "decoder.res_blocks.1"} <= set(blocks)
    assert "encoder.conv_start_seq" in blocks and "decoder.conv_end" not in blocks
    with pytest.raises(AttributionError, match="not submodules"):
        attribute(toy, codes, tracks, LOOP, "saliency", checkpoint=["decoder.nope"])


# --- tiling and stitching -----------------------------------------------------------------


def test_tile_windows_centres_the_owned_parts_and_clips_to_the_chromosome():
    assert tile_windows(1000, 1400, 200, 100, 10_000) == [950, 1050, 1150, 1250]
    assert tile_windows(0, 300, 200, 100, 10_000) == [0, 50, 150]
    assert tile_windows(9800, 10_000, 200, 100, 10_000) == [9750, 9800]
    with pytest.raises(ValueError):
        tile_windows(0, 300, 200, 300, 10_000)
    with pytest.raises(ValueError):
        tile_windows(0, 300, 200, 100, 250)


def test_stitch_takes_each_position_from_the_nearest_centre():
    # windows of 10 at 0 and 4: centres 5 and 9, boundary at 7 (ties go to the left window)
    a, b = np.full((10, 1), 1.0), np.full((10, 1), 2.0)
    got = stitch([(4, b), (0, a)], 0, 14)[:, 0]
    assert got.tolist() == [1] * 7 + [2] * 7
    mean = stitch([(0, a[:, 0]), (4, b[:, 0])], 2, 12, keep="mean")
    assert mean.tolist() == [1, 1, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 2, 2]
    with pytest.raises(ValueError, match="uncovered"):
        stitch([(0, a), (12, b)], 0, 22)
    with pytest.raises(ValueError, match="uncovered"):
        stitch([(0, a)], 0, 11)


@settings(max_examples=100, deadline=None)
@given(
    window=st.integers(1, 40),
    step_fraction=st.floats(0.01, 1.0),
    chrom_extra=st.integers(0, 200),
    region=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    channels=st.integers(1, 3),
)
def test_stitching_tiled_windows_reproduces_the_signal(window, step_fraction, chrom_extra, region, channels):
    chrom_length = window + chrom_extra
    step = max(1, int(round(step_fraction * window)))
    lo, hi = sorted(int(r * chrom_length) for r in region)
    start, end = lo, max(hi, lo + 1)
    if end > chrom_length:
        start, end = chrom_length - 1, chrom_length
    signal = np.random.default_rng(window * 7919 + chrom_extra).normal(size=(chrom_length, channels))
    starts = tile_windows(start, end, window, step, chrom_length)
    pieces = [(s, signal[s : s + window]) for s in starts]
    assert np.array_equal(stitch(pieces, start, end), signal[start:end])
    assert np.allclose(stitch(pieces, start, end, keep="mean"), signal[start:end])
    # windows owning no part of the region, and duplicates, change nothing
    extra = [(0, signal[:window]), (chrom_length - window, signal[-window:]), pieces[0]]
    assert np.array_equal(stitch(pieces + extra, start, end), signal[start:end])


def test_stitch_attributions_from_tiled_windows(toy):
    # per-window attributions of one region stitch to [region, 4]
    length = TOY_CONFIG["window_length"]
    starts = tile_windows(100, 900, length, 256, 2000)
    rng = np.random.default_rng(0)
    chrom = rng.integers(0, 4, 2000).astype(np.uint8)
    codes = np.stack([chrom[s : s + length] for s in starts])
    tracks = np.ones((len(starts), 2, length), np.float32)
    attr = attribute(toy, codes, tracks, WholeMap(), "saliency")
    out = stitch(list(zip(starts, attr.sequence)), 100, 900)
    assert out.shape == (800, 4) and out.dtype == np.float32

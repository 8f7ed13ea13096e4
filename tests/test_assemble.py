"""Inputs assembled on the device (screening.compute.assemble) equal the host-built inputs, exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from screening.compute.assemble import EditedInput, InputAssembler
from screening.compute.engine import materialize, run_unit, stack_spans
from screening.core.encode import N_CODE
from screening.io.genome import Genome
from screening.io.tracks import Track, TrackSet
from screening.models.corigami import CorigamiAdapter, CorigamiConfig
from screening.models.orca import OrcaAdapter, OrcaConfig
from screening.models.user import UserModelAdapter, UserModelDeclaration
from screening.spec import (
    DeletionSpec,
    DuplicationSpec,
    InsertionSpec,
    InversionSpec,
    MaskSpec,
    MutagenesisSpec,
    ShuffleSpec,
)

from helpers import TOY_CONFIG

WINDOW = 512


def _corigami():
    return CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0)


def _user_ncl():
    declaration = UserModelDeclaration(window_length=WINDOW, bin_size=32, n_bins=16, input_layout="NCL", alphabet="TGCA",
                                       n_value=0.25, tracks=["ctcf", "atac"])
    return UserModelAdapter(torch.nn.Identity(), declaration)


def _orca():
    config = OrcaConfig(encoder_channels=[4, 6, 8, 8], pools=[4, 4, 5], kernel_size=3, decoder_channels=8,
                        decoder_hidden=4, dilations=[1, 2, 4], head_hidden=3, num_1d=2, n_bins=16)
    return OrcaAdapter.random_init(config, seed=1)


def _edits(length: int, n_tracks: int, rng) -> list[EditedInput]:
    """Every shape of edit the kinds make: unedited, deletions (zero/follow padding, at the window's end),
    insertions (also past the end), same-length replacements with and without tracks, substitutions."""
    extra = 40
    codes = rng.integers(0, 5, length + extra).astype(np.uint8)
    tracks = rng.normal(size=(n_tracks, length + extra)).astype(np.float32) if n_tracks else None

    def alt(n, with_tracks=False):
        values = rng.normal(size=(n_tracks, n)).astype(np.float32) if with_tracks and n_tracks else None
        return rng.integers(0, 5, n).astype(np.uint8), values

    cases = [(length, 0, *alt(0))]  # the reference itself
    cases += [(100, 40, *alt(0)), (length - 10, 40, *alt(0)), (0, 30, *alt(0))]  # deletions
    cases += [(200, 0, *alt(25)), (length - 5, 0, *alt(25)), (0, 0, *alt(3))]  # insertions (one cut at the end)
    cases += [(300, 20, *alt(20, True)), (300, 20, *alt(20)), (7, 1, *alt(1, True))]  # replacements, substitution
    cases += [(50, 10, *alt(30, True)), (60, 30, *alt(5, True))]  # longer and shorter than the reference
    return [
        EditedInput(codes, tracks, offset, ref_length, alt_codes, None if tracks is None else alt_tracks, length, padding)
        for offset, ref_length, alt_codes, alt_tracks in cases
        for padding in ("zero", "follow")
    ]


@pytest.mark.parametrize("make", [_corigami, _user_ncl, _orca], ids=["corigami NLC", "user NCL", "orca NCL"])
def test_device_built_inputs_equal_host_built_inputs_bit_for_bit(make):
    adapter = make()
    length = adapter.geometry.window_length
    n_tracks = len(adapter.track_names)
    inputs = _edits(length, n_tracks, np.random.default_rng(3))
    expected = adapter.build_input(*stack_spans([materialize(item) for item in inputs]))
    got = InputAssembler(adapter).build(inputs)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected)


def test_buffers_are_reused_in_turn_and_short_batches_are_views():
    adapter = _corigami()
    assembler = InputAssembler(adapter, buffers=2)
    inputs = _edits(WINDOW, 2, np.random.default_rng(0))
    first, second, third = (assembler.build(inputs[:4]) for _ in range(3))
    assert first.data_ptr() != second.data_ptr() and first.data_ptr() == third.data_ptr()
    short = assembler.build(inputs[:2])  # slot 2 of 2: the second buffer, its first two rows
    assert short.shape[0] == 2 and short.data_ptr() == second.data_ptr()
    assert torch.equal(short, adapter.build_input(*stack_spans([materialize(i) for i in inputs[:2]])))


def test_an_edit_apply_edit_refuses_is_refused():
    adapter = _corigami()
    codes = np.zeros(WINDOW, np.uint8)
    tracks = np.zeros((2, WINDOW), np.float32)
    bad = EditedInput(codes, tracks, WINDOW - 5, 10, np.zeros(0, np.uint8), None, WINDOW)  # past the span
    with pytest.raises(ValueError, match="outside the loaded span"):
        InputAssembler(adapter).build([bad])
    with pytest.raises(ValueError, match="no position-wise input encoding"):
        InputAssembler(type("Plain", (), {"position_encoding": lambda self: None, "device": torch.device("cpu")})())


def test_padding_is_the_encoded_n_with_zero_tracks():
    adapter = _corigami()
    codes = np.zeros(WINDOW + 20, np.uint8)
    tracks = np.ones((2, WINDOW + 20), np.float32)
    deletion = EditedInput(codes, tracks, 100, 20, np.zeros(0, np.uint8), None, WINDOW, "zero")
    x = InputAssembler(adapter).build([deletion])[0]
    n_channels = adapter.position_encoding().table[N_CODE]
    np.testing.assert_array_equal(x[-20:, :5].numpy(), np.tile(n_channels, (20, 1)))
    assert (x[-20:, 5:] == 0).all() and (x[:-20, 5:] == 1).all()


@pytest.fixture(scope="module")
def toy(toy_paths):
    genome = Genome(toy_paths["fasta"])
    tracks = TrackSet([Track(toy_paths["ctcf"], "ctcf"), Track(toy_paths["atac"], "atac", "log1p")])
    return _corigami(), genome, tracks


def _payload(starts, width, window_starts):
    starts = np.asarray(starts, np.int64)
    return {"start": starts, "end": starts + width, "window_start": np.asarray(window_starts, np.int64)}


KINDS = {
    "deletion zero": (DeletionSpec(width=20, step=20, keep_maps=3), 20),
    "deletion follow": (DeletionSpec(width=20, step=20, padding="follow"), 20),
    "mask": (MaskSpec(width=20, step=20, mask_tracks=True), 20),
    "shuffle": (ShuffleSpec(width=20, step=20, seed=4), 20),
    "inversion": (InversionSpec(width=20, step=20), 20),
    "duplication": (DuplicationSpec(width=20, step=20), 20),
    "insertion": (InsertionSpec(step=20, motif="CTCF", orientation="-"), 1),
}


@pytest.mark.parametrize("name", [*KINDS, "mutagenesis"])
@pytest.mark.parametrize("shared", [False, True], ids=["centred", "shared"])
def test_every_kind_scores_the_same_with_inputs_built_on_the_device_or_the_host(toy, monkeypatch, name, shared):
    adapter, genome, tracks = toy
    starts = np.arange(2_000, 2_160, 20)
    if name == "mutagenesis":
        spec, width, starts = MutagenesisSpec(keep_maps=2), 1, np.arange(2_000, 2_006)
    else:
        spec, width = KINDS[name]
    window_starts = (np.full(len(starts), 1_800) if shared else (2 * starts + width - WINDOW) // 2)
    payload = _payload(starts, width, window_starts)
    device = run_unit(adapter, genome, tracks, spec, "chr1", payload, batch_size=5)
    monkeypatch.setattr(adapter, "position_encoding", lambda: None)  # the host path: edit, stack, build_input
    host = run_unit(adapter, genome, tracks, spec, "chr1", payload, batch_size=5)
    assert device.values.keys() == host.values.keys()
    for score in host.values:
        np.testing.assert_array_equal(device.values[score], host.values[score], err_msg=score)
        assert np.isfinite(host.values[score]).any()
    if host.top_index is not None:
        np.testing.assert_array_equal(device.top_index, host.top_index)
        np.testing.assert_array_equal(device.top_delta, host.top_delta)


def test_a_window_read_inside_a_longer_span_is_the_same_input():
    """Inputs of neighbouring windows read at once (``start`` into a longer span) equal those of their own reads."""
    adapter = _corigami()
    rng = np.random.default_rng(5)
    own = _edits(WINDOW, 2, rng)
    prefix_codes = rng.integers(0, 5, 37).astype(np.uint8)
    prefix_tracks = rng.normal(size=(2, 37)).astype(np.float32)
    shared_codes = np.concatenate([prefix_codes, own[0].codes])
    shared_tracks = np.concatenate([prefix_tracks, own[0].tracks], axis=1)
    inside = [dataclasses.replace(item, codes=shared_codes, tracks=shared_tracks, start=37) for item in own]
    assembler = InputAssembler(adapter)
    assert torch.equal(assembler.build(inside), assembler.build(own))
    for a, b in zip(inside, own):
        np.testing.assert_array_equal(materialize(a).codes, materialize(b).codes)
        np.testing.assert_array_equal(materialize(a).tracks, materialize(b).tracks)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("make", [_corigami, _user_ncl, _orca], ids=["corigami NLC", "user NCL", "orca NCL"])
def test_inputs_built_on_a_gpu_equal_host_built_inputs(make):
    adapter = make()
    adapter.device = torch.device("cuda")
    adapter.module.to(adapter.device)
    inputs = _edits(adapter.geometry.window_length, len(adapter.track_names), np.random.default_rng(3))
    expected = adapter.build_input(*stack_spans([materialize(item) for item in inputs]))
    got = InputAssembler(adapter, buffers=3).build(inputs)
    assert got.device.type == "cuda" and torch.equal(got, expected)

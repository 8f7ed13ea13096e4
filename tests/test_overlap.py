"""Overlap of input building with compute: order, errors, early stop, identical results."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from helpers import TOY_CONFIG
from screening.compute.engine import run_unit
from screening.io.genome import Genome
from screening.io.tracks import Track, TrackSet
from screening.models.corigami import CorigamiAdapter, CorigamiConfig
from screening.compute.prefetch import predict_batches, prefetch
from screening.perturb.edits import centered_window_start
from screening.models.precision import configure_adapter
from screening.spec import DeletionSpec, MutagenesisSpec


@pytest.mark.parametrize("depth", [1, 3])
def test_prefetch_keeps_order(depth):
    assert list(prefetch(iter(range(500)), depth=depth)) == list(range(500))


def test_prefetch_runs_ahead_in_another_thread():
    threads = []

    def produce():
        for i in range(5):
            threads.append(threading.current_thread())
            yield i

    assert list(prefetch(produce())) == [0, 1, 2, 3, 4]
    assert threading.main_thread() not in threads


def test_prefetch_reraises_the_producer_error_after_the_items_before_it():
    def produce():
        yield 1
        yield 2
        raise ValueError("window chr1:-5-507 leaves the chromosome")

    got = []
    with pytest.raises(ValueError, match="leaves the chromosome"):
        for item in prefetch(produce()):
            got.append(item)
    assert got == [1, 2]


def test_prefetch_stops_its_producer_when_the_consumer_stops():
    finished = threading.Event()

    def produce():
        try:
            for i in range(10_000):
                yield i
        finally:
            finished.set()

    stream = prefetch(produce(), depth=1)
    assert next(stream) == 0
    stream.close()  # the consumer gives up: the producer thread is joined, the generator closed
    assert finished.wait(5)


@pytest.fixture(scope="module")
def toy(toy_paths, one_thread):
    adapter = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0)
    genome = Genome(toy_paths["fasta"])
    tracks = TrackSet([Track(toy_paths["ctcf"], "ctcf"), Track(toy_paths["atac"], "atac", "log1p")])
    return adapter, genome, tracks


def _batches(genome, tracks, starts, window=512):
    for start in starts:
        codes = np.stack([genome.fetch("chr1", s, s + window) for s in (start, start + 7)])
        values = np.stack([tracks.fetch("chr1", s, s + window) for s in (start, start + 7)])
        yield codes, values


def test_predict_batches_same_maps_in_the_same_order_with_overlap(toy):
    adapter, genome, tracks = toy
    starts = [100, 900, 1700, 2500, 3300]
    plain = [adapter.predict(*batch) for batch in _batches(genome, tracks, starts)]
    configure_adapter(adapter, "fp32", overlap=True)
    built_in: list[threading.Thread] = []
    original = adapter.host_input

    def recording(codes, values):
        built_in.append(threading.current_thread())
        return original(codes, values)

    adapter.host_input = recording
    try:
        overlapped = list(predict_batches(adapter, _batches(genome, tracks, starts)))
    finally:
        del adapter.host_input
        configure_adapter(adapter, "fp32", overlap=False)
    assert len(overlapped) == len(plain) == 5
    for got, want in zip(overlapped, plain):
        np.testing.assert_array_equal(got, want)
    assert len(built_in) == 5 and threading.main_thread() not in built_in
    assert not np.array_equal(plain[0], plain[1])  # distinct batches: order is really checked


def _payload(starts, width, window):
    starts = np.asarray(starts, np.int64)
    windows = np.array([centered_window_start(int(s), width, window) for s in starts], np.int64)
    return {"start": starts, "end": starts + width, "window_start": windows}


@pytest.mark.parametrize("batch_size", [1, 3])
def test_run_unit_identical_with_overlap_on_and_off(toy, batch_size):
    adapter, genome, tracks = toy
    deletion = DeletionSpec(width=20, step=20, keep_maps=2)
    mutagenesis = MutagenesisSpec()
    payloads = {
        "deletion": (deletion, _payload(range(2000, 2200, 20), 20, 512)),
        "mutagenesis": (mutagenesis, {"start": np.arange(3000, 3004), "end": np.arange(3001, 3005),
                                      "window_start": np.full(4, 3002 - 256, np.int64)}),
    }
    for kind, (spec, payload) in payloads.items():
        runs = []
        for overlap in (False, True):
            configure_adapter(adapter, "fp32", overlap=overlap)
            result = run_unit(adapter, genome, tracks, spec, "chr1", payload, batch_size)
            runs.append((result.values, result))
        configure_adapter(adapter, "fp32", overlap=False)
        (plain, plain_top), (overlapped, overlapped_top) = runs
        for name in plain:
            np.testing.assert_array_equal(overlapped[name], plain[name], err_msg=f"{kind} {name}")
        assert np.isfinite(plain["impact_mean_abs"]).sum() > 0
        if plain_top.top_index is not None:
            np.testing.assert_array_equal(overlapped_top.top_index, plain_top.top_index)
            np.testing.assert_array_equal(overlapped_top.top_delta, plain_top.top_delta)


def test_run_unit_error_in_a_window_surfaces_with_overlap(toy):
    from screening.io.genome import GenomeError

    adapter, genome, tracks = toy
    payload = {"start": np.array([2000, 5990]), "end": np.array([2020, 6010]),
               "window_start": np.array([1754, 5744])}  # the second window runs past chr1's end
    configure_adapter(adapter, "fp32", overlap=True)
    try:
        with pytest.raises(GenomeError, match="runs past the end of chr1"):
            run_unit(adapter, genome, tracks, DeletionSpec(width=20, step=20), "chr1", payload, 1)
    finally:
        configure_adapter(adapter, "fp32", overlap=False)


@pytest.mark.gpu
def test_cuda_overlap_pinned_copies_give_the_same_maps(toy_paths):
    adapter = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0, device="cuda")
    genome = Genome(toy_paths["fasta"])
    tracks = TrackSet([Track(toy_paths["ctcf"], "ctcf"), Track(toy_paths["atac"], "atac", "log1p")])
    starts = [100, 900, 1700, 2500]
    configure_adapter(adapter, "fp32", overlap=False)
    plain = [adapter.predict(*batch) for batch in _batches(genome, tracks, starts)]
    configure_adapter(adapter, "fp32", overlap=True)
    overlapped = list(predict_batches(adapter, _batches(genome, tracks, starts)))
    torch.cuda.synchronize()
    for got, want in zip(overlapped, plain):
        np.testing.assert_array_equal(got, want)

"""The bigWig export streams: its peak memory does not grow with the store (screening.store.export)."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pyBigWig

from screening.store import export as export_mod
from screening.store import reader as reader_mod
from screening.store.reader import open_results
from helpers import group_layout

from screening.store.writer import create_store

ROWS_PER_CHROM = 20_000


def _store(path, n_chroms: int) -> None:
    """``n_chroms`` chromosomes of 20,000 overlapping 250-bp deletions at step 100, all written."""
    lays = []
    for i in range(n_chroms):
        start = np.arange(ROWS_PER_CHROM, dtype=np.int64) * 100 + 10
        lays.append(
            group_layout(start, ["s"], 4_096, int(start[-1]) + 1_000, width=250, chrom=f"chr{i + 1}",
                         params={"width": 250}, window_start=start - 1_000)
        )
    store = create_store(path, {"name": "toy"}, "a" * 64, {}, lays)
    rng = np.random.default_rng(0)
    for lay in lays:
        scores = rng.normal(size=lay.n).astype(np.float32)
        for k in range(lay.n_chunks):
            store.write_chunk(lay.chrom, "del", k, {"s": scores[lay.chunk_slice(k)]})


def _peak_export(path, out) -> int:
    results = open_results(path)
    gc.collect()
    tracemalloc.start()
    try:
        export_mod.to_bigwig(results, out, "s")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_bigwig_export_memory_does_not_grow_with_the_store(tmp_path, monkeypatch):
    """Twice the chromosomes (twice the intervals) must not double the peak: only one block of
    rows and one chromosome's coordinates are held. (Before streaming, every interval was kept for
    the zoom levels: the peak doubled.) The reader's coordinate cache (8 groups) is cut to one
    so that only the export's own memory is compared."""
    monkeypatch.setattr(export_mod, "_ROWS", 2_048)
    monkeypatch.setattr(reader_mod, "_COORD_CACHE", 1)
    _store(tmp_path / "short.zarr", 3)
    _store(tmp_path / "long.zarr", 6)
    short = _peak_export(tmp_path / "short.zarr", tmp_path / "short.bw")
    long = _peak_export(tmp_path / "long.zarr", tmp_path / "long.bw")
    with pyBigWig.open(str(tmp_path / "long.bw")) as bw:  # the export did write everything
        assert len(bw.chroms()) == 6 and bw.header()["nBasesCovered"] == 6 * (ROWS_PER_CHROM * 100 + 150)
    assert long < 1.3 * short, (short, long)

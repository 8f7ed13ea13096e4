"""Motifs from a store (screening.interpret.motifs, `screening motifs`): planted CTCF sites in synthetic
attributions and mutagenesis scores are found, matched to JASPAR MA0139 and written; bad inputs are refused."""

from __future__ import annotations

import numpy as np
import pytest

from screening.cli import main
from screening.core.errors import ScreeningError
from screening.interpret.motifs import MotifError, find_motifs, ism_to_hypothetical, load_jaspar, match_motifs
from screening.perturb.motif import load_ctcf, sample_motif
from helpers import group_layout

from screening.store.layout import GroupLayout
from screening.store.reader import open_results
from screening.store.writer import create_store

CHROM_LENGTH = 60_000
REGION = (5_000, 45_000)  # the analysed positions
N_SITES = 24


def _planted(seed: int = 0):
    """A random sequence with N_SITES CTCF motifs (MA0139.1) planted on alternating strands, and
    hypothetical contributions that are high on the planted bases and small noise elsewhere."""
    rng = np.random.default_rng(seed)
    ctcf = load_ctcf()
    ppm = ctcf.counts / ctcf.counts.sum(axis=0, keepdims=True)
    width = ppm.shape[1]
    lo, hi = REGION
    codes = rng.integers(0, 4, hi - lo).astype(np.int64)
    hyp = rng.normal(0, 0.01, (hi - lo, 4)).astype(np.float32)
    sites = []
    for i, start in enumerate(np.linspace(lo + 500, hi - 500, N_SITES).astype(int)):
        strand = "+" if i % 2 == 0 else "-"
        oriented = ppm if strand == "+" else ppm[::-1, ::-1]
        at = start - lo
        codes[at : at + width] = sample_motif(rng, ppm, strand)
        ic = 2 + (oriented * np.log2(oriented + 1e-9)).sum(axis=0)
        hyp[at : at + width] += (0.5 * (oriented - 0.25) * ic).T.astype(np.float32)
        sites.append((int(start), int(start) + width, strand))
    return codes, hyp, sites


def _layout(kind: str, scores: list[str], chunk: int = 4_000, with_ref: bool = True, codes=None) -> GroupLayout:
    positions = np.arange(*REGION, dtype=np.int64)
    labels = {"ref_base": np.array(list("ACGT"))[codes]} if with_ref else {}
    return GroupLayout(
        chrom="chr1",
        chrom_length=CHROM_LENGTH,
        analysis="attr" if kind == "attribution" else "ism",
        kind=kind,
        params={},
        start=positions,
        end=positions + 1,
        window_start=positions * 0,
        scores=scores,
        chunk_size=chunk,
        extra_dims={"base": 4},
        labels=labels,
        score_dims={s: (["base"] if kind == "mutagenesis" or s.startswith("attribution") else []) for s in scores},
    )


def _write(path, layout: GroupLayout, values: dict[str, np.ndarray]):
    store = create_store(path, {"name": "motifs"}, "h", {}, [layout])
    for k in range(layout.n_chunks):
        sl = layout.chunk_slice(k)
        store.write_chunk(layout.chrom, layout.analysis, k, {name: v[sl] for name, v in values.items()})
    return path


@pytest.fixture(scope="module")
def planted():
    return _planted()


@pytest.fixture(scope="module")
def attribution_store(tmp_path_factory, planted):
    codes, hyp, _ = planted
    layout = _layout("attribution", ["attribution", "attribution_corrected", "target"], codes=codes)
    n = layout.n
    values = {
        "attribution": hyp,
        "attribution_corrected": hyp - hyp.mean(axis=1, keepdims=True),
        "target": np.zeros(n, np.float32),
    }
    return _write(tmp_path_factory.mktemp("attr") / "a.zarr", layout, values)


@pytest.fixture(scope="module")
def jaspar():
    return load_jaspar("CORE", "vertebrates")


def _on_site(start: int, end: int, sites) -> tuple[int, int, str] | None:
    for site in sites:
        if start < site[1] and end > site[0]:
            return site
    return None


def test_attributions_give_ctcf_on_the_planted_sites(attribution_store, planted, jaspar, tmp_path):
    _, _, sites = planted
    result = find_motifs(open_results(attribution_store), database=jaspar)
    assert result.analysis == "attr" and result.score == "attribution_corrected"
    top = result.motifs[0]
    assert top.best.matrix_id.startswith("MA0139") and top.best.name == "CTCF"
    assert top.best.q_value < 0.05
    assert top.n_seqlets >= N_SITES * 0.75
    # every seqlet of the motif lies on a planted site, in a consistent orientation
    flips = set()
    for seqlet in top.seqlets:
        site = _on_site(seqlet.start, seqlet.end, sites)
        assert site is not None, (seqlet.start, seqlet.end)
        assert site[0] <= seqlet.motif_start < seqlet.motif_end <= site[1] + 2
        flips.add((seqlet.strand == site[2]) ^ (top.best.orientation == "-"))
    assert flips == {True}


def test_cli_writes_every_output(attribution_store, planted, tmp_path, capsys):
    _, _, sites = planted
    out = tmp_path / "motifs"
    assert main(["motifs", str(attribution_store), str(out)]) == 0
    assert "MA0139" in capsys.readouterr().out
    table = (out / "motifs.tsv").read_text().splitlines()
    assert table[0].startswith("motif\tn_seqlets\twidth\tmatch1_id")
    assert "MA0139" in table[1] and "CTCF" in table[1]
    assert (out / "motifs.meme").read_text().startswith("MEME version 4")
    assert "MOTIF motif_1 CTCF" in (out / "motifs.meme").read_text()
    assert (out / "logos" / "motif_1.png").stat().st_size > 5_000
    report = (out / "report.html").read_text()
    assert 'src="logos/motif_1.png"' in report and "MA0139" in report
    bed = [line.split("\t") for line in (out / "seqlets.bed").read_text().splitlines() if not line.startswith("#")]
    motif_rows = [row for row in bed if row[3] == "motif_1"]
    assert len(motif_rows) >= N_SITES * 0.75
    for row in motif_rows:  # 0-based, half-open, on the planted sites
        start, end = int(row[1]), int(row[2])
        assert row[0] == "chr1" and 0 <= start < end and row[5] in "+-"
        assert _on_site(start, end, sites) is not None
    assert not list(out.rglob("*.tmp"))


def test_mutagenesis_scores_are_turned_into_attributions(tmp_path, planted, jaspar):
    codes, hyp, sites = planted
    # an effect size per substitution (>= 0, NaN at the reference base): how much worse the alternative is
    ref_value = hyp[np.arange(len(codes)), codes]
    effect = np.clip(ref_value[:, None] - hyp, 0, None).astype(np.float32)
    effect[np.arange(len(codes)), codes] = np.nan
    layout = _layout("mutagenesis", ["impact_mean_abs"], codes=codes)
    store = _write(tmp_path / "ism.zarr", layout, {"impact_mean_abs": effect})
    result = find_motifs(open_results(store), regions=["chr1:5,000-45,000"], database=jaspar, block_size=7_000)
    assert result.score == "impact_mean_abs"
    top = result.motifs[0]
    assert top.best.matrix_id.startswith("MA0139") and top.best.q_value < 0.05
    assert all(_on_site(s.start, s.end, sites) for s in top.seqlets)


def test_ism_to_hypothetical_follows_tangermeme():
    scores = np.array([[np.nan, 0.3, 0.0, 0.1], [0.2, 0.2, np.nan, 0.2], [np.nan, np.nan, 1.0, 1.0]], np.float32)
    ref = np.array([0, 2, 0])
    hyp = ism_to_hypothetical(scores, ref, "impact_mean_abs")
    delta = -np.array([[0, 0.3, 0, 0.1], [0.2, 0.2, 0, 0.2]])
    np.testing.assert_allclose(hyp[:2], delta - delta.mean(axis=1, keepdims=True), atol=1e-6)
    assert hyp[0, 0] == pytest.approx(0.1)  # the reference base: -mean(Δ) = (0.3 + 0.1) / 4
    assert np.isnan(hyp[2]).all()  # a substitution was not computed
    signed = ism_to_hypothetical(np.array([[np.nan, 1.0, -1.0, 0.0]]), np.array([0]), "insulation_delta")
    np.testing.assert_allclose(signed, [[0, 1, -1, 0]], atol=1e-6)


def test_tomtom_matches_a_planted_pwm(jaspar):
    ctcf = load_ctcf()
    ppm = ctcf.counts / ctcf.counts.sum(axis=0, keepdims=True)
    forward, reverse = match_motifs([ppm, ppm[::-1, ::-1].copy()], jaspar)
    assert forward[0].matrix_id.startswith("MA0139") and forward[0].orientation == "+" and forward[0].q_value < 1e-3
    assert reverse[0].matrix_id.startswith("MA0139") and reverse[0].orientation == "-"


def test_bad_inputs_are_refused_and_write_nothing(attribution_store, tmp_path, capsys):
    out = tmp_path / "out"
    cases = [
        (["--analysis", "nope"], "unknown analysis 'nope'"),
        (["--region", "chr1:50,000-70,000"], "past the end"),
        (["--region", "chr9:0-10"], "no results"),
        (["--score", "target"], "not a per-base score"),
        (["--collection", "NOPE"], "unknown JASPAR collection 'NOPE'"),
        (["--tax-group", "martians"], "unknown JASPAR taxonomic group"),
    ]
    for extra, message in cases:
        assert main(["motifs", str(attribution_store), str(out), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err, (extra, err)
        assert not out.exists()
    assert main(["motifs", str(tmp_path / "missing.zarr"), str(out)]) == 2
    assert not out.exists()


def test_store_without_per_base_scores_is_refused(tmp_path, capsys):
    starts = np.arange(0, 4_000, 1_000, dtype=np.int64)
    layout = group_layout(starts, ["impact_mean_abs"], 4, 20_000, width=1_000, window_start=starts)
    create_store(tmp_path / "del.zarr", {"name": "t"}, "h", {}, [layout])
    with pytest.raises(MotifError, match="no per-base scores") as info:
        find_motifs(open_results(tmp_path / "del.zarr"))
    assert isinstance(info.value, ScreeningError)
    assert main(["motifs", str(tmp_path / "del.zarr"), str(tmp_path / "out")]) == 2
    assert "no per-base scores" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_uncomputed_scores_are_refused(tmp_path, planted):
    codes, _, _ = planted
    layout = _layout("attribution", ["attribution", "attribution_corrected", "target"], codes=codes)
    create_store(tmp_path / "empty.zarr", {"name": "t"}, "h", {}, [layout])  # nothing computed yet
    with pytest.raises(MotifError, match="no computed per-base scores"):
        find_motifs(open_results(tmp_path / "empty.zarr"))


def test_missing_reference_sequence_is_refused(tmp_path, planted):
    codes, hyp, _ = planted
    layout = _layout("attribution", ["attribution", "attribution_corrected", "target"], codes=codes, with_ref=False)
    store = _write(
        tmp_path / "noref.zarr",
        layout,
        {"attribution": hyp, "attribution_corrected": hyp, "target": np.zeros(layout.n, np.float32)},
    )
    with pytest.raises(MotifError, match="no reference bases"):
        find_motifs(open_results(store))


@pytest.mark.slow  # TF-MoDISco's clustering (~35 s); the seqlets method keeps the default run's coverage
def test_modisco_finds_ctcf_too(attribution_store, planted, jaspar):
    _, _, sites = planted
    result = find_motifs(open_results(attribution_store), method="modisco", database=jaspar)
    top = result.motifs[0]
    assert top.best.matrix_id.startswith("MA0139") and top.best.q_value < 0.05
    assert top.n_seqlets >= N_SITES * 0.75
    for seqlet in top.seqlets:  # TF-MoDISco's seqlets, placed back on the genome
        site = _on_site(seqlet.motif_start, seqlet.motif_end, sites)
        assert site is not None and (seqlet.strand == site[2]) ^ (top.best.orientation == "-")


def test_unknown_method_and_release_are_refused(attribution_store):
    with pytest.raises(MotifError, match="unknown method"):
        find_motifs(open_results(attribution_store), method="kmeans")
    with pytest.raises(MotifError, match="unknown JASPAR release"):
        find_motifs(open_results(attribution_store), release="JASPAR1999")


def test_demo_motif_step_finds_ctcf_and_its_shuffled_control_does_not(attribution_store, tmp_path):
    from screening.demo.demo import demo_motif_report

    # half the planted sites keep it fast; the demo's JASPAR2022 has CTCF as MA0139.1
    summary = demo_motif_report(tmp_path, store=attribution_store, regions=["chr1:5,000-25,000"])
    matrix_id, name, q_value, n_seqlets = summary.top["attr"]
    assert (matrix_id, name) == ("MA0139.1", "CTCF") and q_value < 0.05 and n_seqlets >= N_SITES // 2 * 0.75
    control = summary.top["attr_shuffled"]
    assert control is None or control[2] >= 0.05
    assert (tmp_path / "motifs" / "attr" / "report.html").is_file()
    assert (tmp_path / "motifs" / "attr_shuffled" / "report.html").is_file()
    assert "attr_shuffled" in summary.text and "MA0139.1" in summary.text


def test_motif_demo_spec_covers_the_planted_sites(tmp_path):
    import yaml

    from screening.demo.demo import motif_demo_raw
    from screening.demo.synthetic import read_truth

    data = tmp_path / "data"
    data.mkdir()
    (data / "genome.fa.fai").write_text("chr1\t400000\t6\t60\t61\nchr2\t400000\t6\t60\t61\n")
    rows = [
        ("chr2", 10_000, 0.9),
        ("chr2", 150_000, 0.5),
        ("chr2", 200_000, 0.8),
        ("chr2", 390_000, 0.7),
        ("chr1", 150_000, 1.0),
    ]
    (data / "truth.bed").write_text(
        "".join(f"{c}\t{s}\t{s + 19}\tsite{i}\t0\t+\tctcf_site\t{w}\n" for i, (c, s, w) in enumerate(rows))
    )
    assert len(read_truth(data / "truth.bed")) == 5
    (tmp_path / "demo.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "demo",
                "model": {"kind": "corigami", "config": {"window_length": 131_072}},
                "perturbations": [],
                "output": {"store": "results.zarr"},
            }
        )
    )
    raw = motif_demo_raw(tmp_path, n_ism_sites=1)
    saliency, ism = raw["perturbations"]
    # sites whose centred window leaves the chromosome (10,000 and 390,000) are left out
    assert saliency["regions"] == ["chr1:149960-150059", "chr2:149960-150059", "chr2:199960-200059"]
    assert ism["regions"] == ["chr2:199997-200022"]  # the strongest of the held-out chr2, ± 3 bp
    assert raw["output"]["store"] == "motifs.zarr" and saliency["kind"] == "attribution"


def test_n_positions_counts_each_analysed_position_once(attribution_store, jaspar):
    # 7,000-base blocks with 35-base margins: the margins are read twice but counted once
    result = find_motifs(open_results(attribution_store), database=jaspar, block_size=7_000)
    assert result.n_positions == REGION[1] - REGION[0]


def test_block_read_equals_the_query_and_skips_units_not_done(tmp_path, planted):
    from screening.core.regions import Region
    from screening.interpret.motifs.source import open_source

    codes, hyp, _ = planted
    layout = _layout("attribution", ["attribution"], codes=codes)
    store = create_store(tmp_path / "part.zarr", {"name": "t"}, "h", {}, [layout])
    for k in range(layout.n_chunks):
        if k != 3:  # unit 3 (positions 17,000-21,000) not done: NaN, as the query shows it
            store.write_chunk("chr1", "attr", k, {"attribution": hyp[layout.chunk_slice(k)]})
    source = open_source(open_results(tmp_path / "part.zarr"), None, None)
    ds = source.results.query(Region("chr1", 10_500, 29_700), analysis="attr")
    direct = source._scores(ds, "chr1")
    np.testing.assert_array_equal(direct, np.asarray(ds["attribution"].values))
    assert direct.dtype == np.float32 and np.isnan(direct[17_000 - 10_500]).all()
    assert np.isfinite(direct[: 17_000 - 10_500]).all() and np.isfinite(direct[21_000 - 10_500 :]).all()


def test_block_read_allocates_one_output(tmp_path):
    """A block that straddles store units is read one stored chunk at a time into one output: the traced
    peak is that output plus one chunk's decoding, not a buffer per unit plus masking and concatenation."""
    import tracemalloc

    from screening.core.regions import Region
    from screening.interpret.motifs.source import open_source

    n, chunk = 1_200_000, 150_000  # a score shard (and zarr chunk) per unit at this size
    positions = np.arange(n, dtype=np.int64)
    layout = GroupLayout(
        chrom="chr1", chrom_length=n, analysis="attr", kind="attribution", params={}, start=positions,
        end=positions + 1, window_start=positions * 0, scores=["attribution"], chunk_size=chunk,
        extra_dims={"base": 4}, labels={}, score_dims={"attribution": ["base"]},
    )  # fmt: skip
    store = create_store(tmp_path / "big.zarr", {"name": "t"}, "h", {}, [layout])
    rng = np.random.default_rng(0)
    for k in range(layout.n_chunks):
        store.write_chunk("chr1", "attr", k, {"attribution": rng.normal(0, 0.01, (chunk, 4)).astype(np.float32)})
    source = open_source(open_results(tmp_path / "big.zarr"), None, None)
    ds = source.results.query(Region("chr1", 100_000, 1_100_000), analysis="attr")  # 8 units
    source._scores(ds, "chr1")  # warm (imports, codec set-up)
    tracemalloc.start()
    try:
        values = source._scores(ds, "chr1")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert values.shape == (1_000_000, 4)
    chunk_bytes = chunk * 4 * 4  # one unit's scores, decoded (zstd and crc32c buffers of about that size)
    assert peak < values.nbytes + 4.5 * chunk_bytes + (1 << 20), peak / values.nbytes


def test_reference_labels_are_coded_without_a_python_loop():
    from screening.interpret.motifs.source import _label_codes

    letters = np.array(["A", "c", "G", "t", "N", "", "n", "é"])
    np.testing.assert_array_equal(_label_codes(letters), [0, 1, 2, 3, 4, 4, 4, 4])
    np.testing.assert_array_equal(_label_codes(letters.astype(object)), [0, 1, 2, 3, 4, 4, 4, 4])
    np.testing.assert_array_equal(_label_codes(np.array([b"T", b"g", b"-"])), [3, 2, 4])
    assert _label_codes(np.array([], "U1")).shape == (0,)


def test_clustering_tomtom_in_chunks_keeps_every_match(monkeypatch):
    import warnings

    from memelite.tomtom import tomtom

    from screening.interpret.motifs import discover

    rng = np.random.default_rng(3)
    shared = rng.dirichlet(np.ones(4), 12).T
    cores = []
    for i in range(90):  # a third are noisy copies of one motif: they match each other
        width = int(rng.integers(6, 13))
        m = (
            (shared[:, :width] + rng.normal(0, 0.02, (4, width))).clip(1e-3)
            if i % 3 == 0
            else rng.dirichlet(np.ones(4), width).T
        )
        cores.append(np.asfortranarray(m / m.sum(axis=0)))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="tomtom was given")
        p, _, offsets, _, strands, idxs = tomtom(cores, cores, n_nearest=len(cores), n_jobs=1)
    monkeypatch.setattr(discover, "_TOMTOM_QUERIES", 7)
    ptr, index, offset, strand = discover._similar(cores, 1e-3, 1)
    assert len(ptr) == len(cores) + 1 and ptr[-1] > 30
    for i in range(len(cores)):
        keep = (p[i] < 1e-3) & (idxs[i].astype(int) != i)
        got = slice(ptr[i], ptr[i + 1])
        np.testing.assert_array_equal(index[got], idxs[i][keep].astype(int))
        np.testing.assert_array_equal(offset[got], offsets[i][keep].astype(int))
        np.testing.assert_array_equal(strand[got], strands[i][keep].astype(int))

"""Synthetic genome: reproducibility, planted truth, tracks, contact model, config errors."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pyBigWig
import pyfaidx
import pytest

from screening.core.encode import encode, reverse_complement
from screening.demo.synthetic import (
    ContactParams,
    Site,
    SyntheticConfig,
    SyntheticGenome,
    contact_map,
    convergent_pairs,
    generate,
    load_ctcf,
    read_jaspar,
    sample_motif,
    scan,
)

SHARED_JASPAR = Path("/work/shared/motifs/MA0139.1.jaspar")
BIN = 1024


def small_config(**changes) -> SyntheticConfig:
    base = {"seed": 7, "chromosomes": [("chrA", 300_000), ("chrB", 200_001)]}
    return SyntheticConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def genome(tmp_path_factory) -> SyntheticGenome:
    return generate(small_config(), tmp_path_factory.mktemp("synth") / "g")


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- motif


def test_jaspar_parse_matches_bundled_copy():
    motif = load_ctcf()
    assert (motif.matrix_id, motif.name, motif.width) == ("MA0139.1", "CTCF", 19)
    assert motif.counts[:, 0].tolist() == [87, 291, 76, 459]
    if SHARED_JASPAR.exists():
        np.testing.assert_array_equal(read_jaspar(SHARED_JASPAR).counts, motif.counts)


def test_jaspar_malformed_names_line(tmp_path):
    bad = tmp_path / "bad.jaspar"
    bad.write_text(">X y\nA [ 1 2 ]\nC [ 1 2 ]\nG [ 1 x ]\nT [ 1 2 ]\n")
    with pytest.raises(ValueError, match=r"bad.jaspar:4"):
        read_jaspar(bad)


def test_sample_motif_orientation_and_scan_agree_with_naive():
    motif = load_ctcf()
    forward = sample_motif(np.random.default_rng(1), motif, "+")
    reverse = sample_motif(np.random.default_rng(1), motif, "-")
    np.testing.assert_array_equal(reverse, reverse_complement(forward))

    codes = np.random.default_rng(2).integers(0, 4, 500).astype(np.uint8)
    codes[100:119] = forward
    codes[300:319] = reverse
    result = scan(codes, motif, gc=0.41)
    log_odds = motif.log_odds(0.41)
    rc_odds = log_odds[::-1, ::-1]
    for i in (0, 57, 100, 300, 481):
        window = codes[i : i + 19]
        naive = max(log_odds[window, np.arange(19)].sum(), rc_odds[window, np.arange(19)].sum())
        assert result.score[i] == pytest.approx(naive, abs=1e-3)
    assert (result.strand[100], result.strand[300]) == (1, -1)
    assert set(np.argsort(result.score)[-2:]) == {100, 300}
    assert scan(codes[:10], motif).score.size == 0


# ---------------------------------------------------------------- generator


def test_same_seed_same_files_other_seed_differs(genome, tmp_path):
    again = generate(small_config(), tmp_path / "again")
    assert files(again.root) == files(genome.root)
    other = generate(small_config(seed=8), tmp_path / "other")
    assert files(other.root)["genome.fa"] != files(genome.root)["genome.fa"]


def test_layout_counts_spacing_and_reopen(genome):
    config = genome.config
    for chrom, length in config.chromosomes:
        sites = genome.sites_on(chrom)
        counts = {role: len(genome.sites_on(chrom, role)) for role in config.counts(length)}
        assert counts == config.counts(length)
        centers = np.array([s.center for s in sites])
        assert np.all(np.diff(centers) >= config.min_spacing)
        assert all(0 <= s.start < s.end <= length for s in sites)
    assert {s.strand for s in genome.sites if s.role == "decoy_peak"} == {"."}
    reopened = SyntheticGenome.open(genome.root)
    assert reopened.config == config
    assert reopened.sites == genome.sites


def test_planted_motifs_found_by_scan(genome):
    motif, config = load_ctcf(), genome.config
    low, high = motif.score_range(config.gc)
    fasta = pyfaidx.Fasta(str(genome.fasta))
    for chrom, length in config.chromosomes:
        codes = encode(str(fasta[chrom][:]))
        assert codes.size == length and codes.max() < 4
        result = scan(codes, motif, config.gc)
        relative = (result.score - low) / (high - low)
        planted = [s for s in genome.sites_on(chrom) if s.role != "decoy_peak"]
        starts = np.array([s.start for s in planted])
        assert np.all(relative[starts] >= config.motif_min_relscore)
        assert [1 if s.strand == "+" else -1 for s in planted] == result.strand[starts].tolist()
        # Everywhere away from planted motifs (decoys included) stays below the background cap.
        near = np.zeros(relative.size, bool)
        for start in starts:
            near[max(start - 18, 0) : start + 19] = True
        assert relative[~near].max() < config.background_max_relscore


def peak_mean(bw, site: Site, half: int = 100) -> float:
    center = int(site.center)
    return bw.stats(site.chrom, center - half, center + half, type="mean")[0]


def test_peaks_at_functional_sites_and_decoys_not_at_motif_only(genome):
    ctcf = pyBigWig.open(str(genome.ctcf_bigwig))
    atac = pyBigWig.open(str(genome.atac_bigwig))
    assert ctcf.chroms() == genome.chrom_sizes == atac.chroms()
    by_role = {role: [s for s in genome.sites if s.role == role] for role in ("ctcf_site", "decoy_peak", "motif_only")}
    for role in ("ctcf_site", "decoy_peak"):
        assert min(peak_mean(ctcf, s) for s in by_role[role]) > 2.0, role
    assert max(peak_mean(ctcf, s) for s in by_role["motif_only"]) < 2.0
    atac_mean = {role: np.mean([peak_mean(atac, s) for s in sites]) for role, sites in by_role.items()}
    assert atac_mean["ctcf_site"] > 3 * atac_mean["motif_only"]
    assert atac_mean["decoy_peak"] > 3 * atac_mean["motif_only"]
    # Decoys must not be told apart by height alone.
    heights = {role: np.median([peak_mean(ctcf, s) for s in by_role[role]]) for role in ("ctcf_site", "decoy_peak")}
    assert 0.6 < heights["decoy_peak"] / heights["ctcf_site"] < 1.6


def test_written_contacts_match_the_model(genome):
    for chrom, length in genome.config.chromosomes:
        matrix = genome.contacts(chrom)
        n = -(-length // BIN)
        assert matrix.shape == (n, n) and matrix.dtype == np.float32
        np.testing.assert_array_equal(matrix, matrix.T)
        clean = contact_map(genome.sites_on(chrom), 0, length, BIN, None, genome.config.contact)
        # Noise is multiplicative log-normal with s.d. 0.15: written map stays close to the clean one.
        assert np.median(np.abs(np.expm1(matrix) / np.expm1(clean) - 1)) < 0.15


# ---------------------------------------------------------------- contact model


def site(pos: int, strand: str, role: str = "ctcf_site", strength: float = 1.0) -> Site:
    return Site("chrT", pos - 9, pos + 10, f"{role}_{pos}", strength, strand, role)


def linear(sites, start=0, end=200 * BIN, params=None):
    return np.expm1(contact_map(sites, start, end, BIN, None, params).astype(np.float64))


def test_boundary_insulates():
    boundary = 100 * BIN + 700  # in bin 100, nearer its right edge: separates bins <= 100 from >= 101
    with_site, without = linear([site(boundary, "+")]), linear([])
    edge = 101
    across = with_site[edge - 5, edge + 5] / without[edge - 5, edge + 5]
    within = with_site[edge - 15, edge - 5] / without[edge - 15, edge - 5]
    assert within == pytest.approx(1.0)
    assert across < 0.9


def test_convergent_pair_has_dot_and_stronger_boundaries():
    left, right = 80 * BIN + BIN // 2, 120 * BIN + BIN // 2
    convergent = linear([site(left, "+"), site(right, "-")])
    divergent = linear([site(left, "-"), site(right, "+")])
    assert len(convergent_pairs([site(left, "+"), site(right, "-")])) == 1
    assert convergent_pairs([site(left, "-"), site(right, "+")]) == []
    dot = convergent[80, 120]
    neighbours = [convergent[80 + d, 120 + e] for d, e in ((-6, 0), (6, 0), (0, -6), (0, 6))]
    assert dot > 2 * max(neighbours)
    assert dot > 2 * divergent[80, 120]
    # Boundary of an engaged (convergent) site insulates more than a lone one.
    assert convergent[75, 85] < divergent[75, 85]


def test_window_of_chromosome_map_equals_window_map():
    sites = [site(p, s) for p, s in ((30_000, "+"), (90_000, "-"), (150_000, "+"), (260_000, "-"), (400_000, "-"))]
    whole = contact_map(sites, 0, 512 * BIN, BIN)
    window = contact_map(sites, 128 * BIN, 256 * BIN, BIN)
    np.testing.assert_allclose(window, whole[128:256, 128:256], rtol=1e-5)


def test_removing_a_functional_site_changes_map_decoy_does_not(genome):
    chrom, length = genome.config.chromosomes[0]
    sites = genome.sites_on(chrom)
    params = genome.config.contact

    def render(kept):
        return contact_map(kept, 0, length, BIN, np.random.default_rng(0), params)

    reference = render(sites)
    for removed in sites:
        changed = render([s for s in sites if s is not removed])
        b = int(removed.center // BIN)
        local = np.abs(changed - reference)[max(b - 20, 0) : b + 20, max(b - 20, 0) : b + 20]
        if removed.role == "ctcf_site":
            assert local.max() > 0.05, removed.name
        else:
            np.testing.assert_array_equal(changed, reference)


def test_contact_map_shape_and_errors():
    matrix = contact_map([], 1000, 1000 + 10 * BIN + 1, BIN, np.random.default_rng(0))
    assert matrix.shape == (11, 11) and np.isfinite(matrix).all()
    with pytest.raises(ValueError, match="chrom_end > chrom_start"):
        contact_map([], 10, 10, BIN)
    with pytest.raises(ValueError, match="insulation"):
        ContactParams(insulation=1.5)


# ---------------------------------------------------------------- bad configs


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"chromosomes": [("chrA", 100_000)], "sites_per_mb": 300.0}, r"chrA .* cannot hold"),
        ({"chromosomes": [("chrA", 100_000)], "min_spacing": 50_000}, r"chrA .* cannot hold"),
        ({"chromosomes": [("chrA", -5)]}, "positive integer"),
        ({"chromosomes": [("chrA", 1.5e5)]}, "positive integer"),
        ({"chromosomes": [("chrA", 100_000), ("chrA", 100_000)]}, "unique"),
        ({"chromosomes": []}, "empty"),
        ({"plus_fraction": 1.2}, "plus_fraction"),
        ({"gc": 1.0}, "gc"),
        ({"sites_per_mb": -1.0}, "sites_per_mb"),
        ({"strength_range": (0.0, 1.0)}, "strength_range"),
        ({"min_spacing": 10}, "motif width"),
        ({"contact_bin_size": 0}, "contact_bin_size"),
        ({"track_resolution": 50.5}, "track_resolution"),
        ({"background_max_relscore": 0.9}, "background_max_relscore"),
    ],
)
def test_bad_config_raises_and_writes_nothing(tmp_path, changes, message):
    config = dataclasses.replace(small_config(), **changes)
    fresh, existing = tmp_path / "fresh", tmp_path / "existing"
    existing.mkdir()
    for outdir in (fresh, existing):
        with pytest.raises(ValueError, match=message):
            generate(config, outdir)
    assert not fresh.exists()
    assert list(existing.iterdir()) == []
    shutil.rmtree(existing)


# ---------------------------------------------------------------- difficulty knobs (docs/synthetic.md)


def _truth_rows(root: Path) -> list[list[str]]:
    return [line.split("\t") for line in (root / "truth.bed").read_text().splitlines() if not line.startswith("#")]


def _knob_genome(tmp_path: Path, **changes) -> SyntheticGenome:
    return generate(small_config(chromosomes=[("chrA", 400_000)], **changes), tmp_path / "g")


def test_knobs_off_write_standard_strata_and_effects(genome):
    rows = _truth_rows(genome.root)
    assert all(len(r) == 11 for r in rows)
    for r in rows:
        assert r[8] == ("standard" if r[6] == "ctcf_site" else r[6]) and r[10] == "."
        assert (float(r[9]) > 0) == (r[6] == "ctcf_site")  # functional strength only where there is function
    meta = __import__("json").loads(genome.config_json.read_text())
    assert meta["format_version"] == 2 and "weak" not in meta["strata"]["chrA"]


def test_weak_knob_lowers_motif_score_and_strength(tmp_path):
    low, high = 0.6, 0.75
    g = _knob_genome(tmp_path, weak_fraction=1.0, weak_relscore_range=(low, high), weak_strength_scale=0.4)
    motif, codes = load_ctcf(), encode(str(pyfaidx.Fasta(str(g.fasta))["chrA"][:]))
    weak = [r for r in _truth_rows(g.root) if r[6] == "ctcf_site"]
    assert weak and all(r[8] == "weak" for r in weak)
    for r in weak:
        relative = motif.relative(scan(codes[int(r[1]) : int(r[2])], motif, g.config.gc).score[0], g.config.gc)
        assert low <= relative < high
        assert float(r[7]) <= 0.4 * g.config.strength_range[1] + 1e-4
    default = [
        r
        for r in _truth_rows(generate(small_config(chromosomes=[("chrA", 400_000)]), tmp_path / "d").root)
        if r[6] == "ctcf_site"
    ]
    assert np.mean([float(r[9]) for r in weak]) < np.mean([float(r[9]) for r in default])


def test_redundant_knob_plants_masked_twins(tmp_path):
    g = _knob_genome(tmp_path, redundant_fraction=1.0, redundant_offset_bp=300)
    sites = g.sites_on("chrA")
    functional = [s for s in sites if s.role == "ctcf_site"]
    twins = [s for s in functional if s.name.endswith("_twin")]
    assert twins and len(functional) == 2 * len(twins) and all(s.stratum == "redundant" for s in functional)
    by_name = {s.name: s for s in sites}
    for twin in twins:
        primary = by_name[twin.group]
        assert twin.start - primary.start == 300 and twin.strand == primary.strand and twin.effect == primary.effect
    # either twin alone is masked by the other; both together are not
    primary = by_name[twins[len(twins) // 2].group]
    twin = twins[len(twins) // 2]
    lo, hi = max(0, primary.start - 100 * BIN), primary.start + 100 * BIN
    full = contact_map(sites, lo, hi, BIN)
    one = contact_map([s for s in sites if s is not primary], lo, hi, BIN)
    both = contact_map([s for s in sites if s is not primary and s is not twin], lo, hi, BIN)
    assert np.abs(full - one).max() < 0.2 * np.abs(full - both).max()


def test_orientation_rule_demotes_sites_without_a_convergent_partner(tmp_path):
    params = ContactParams(min_pair_weight=0.2)
    g = _knob_genome(tmp_path, orientation_rule=True, contact=params)
    sites = g.sites_on("chrA")
    unpaired = [s for s in sites if s.role == "unpaired_site"]
    functional = [s for s in sites if s.role == "ctcf_site"]
    assert unpaired and functional and all(s.effect == 0 and s.strand in "+-" for s in unpaired)
    paired = {s.name for pair in convergent_pairs(sites, params) for s in (pair.left, pair.right)}
    assert paired == {s.name for s in functional}  # every remaining site has a partner, no demoted one has
    # an unpaired site keeps its motif and peak: it looks functional, only its partner is missing
    with pyBigWig.open(str(g.ctcf_bigwig)) as bw:
        assert np.mean([peak_mean(bw, s) for s in unpaired]) > 4 * g.config.ctcf_background
    off = _knob_genome(tmp_path / "off", contact=params)
    assert not [s for s in off.sites if s.role == "unpaired_site"]


def test_gc_stretch_knob_adds_gc_rich_functionless_stretches(tmp_path):
    g = _knob_genome(tmp_path, gc_stretches_per_mb=10, gc_stretch_length=400, gc_stretch_gc=0.75)
    stretches = g.sites_on("chrA", role="gc_stretch")
    assert len(stretches) == 4 and all(s.end - s.start == 400 and s.effect == 0 for s in stretches)
    seq = str(pyfaidx.Fasta(str(g.fasta))["chrA"][:])
    gc = np.mean([sum(c in "GC" for c in seq[s.start : s.end]) / 400 for s in stretches])
    assert gc > 0.65
    with pyBigWig.open(str(g.ctcf_bigwig)) as bw:
        assert np.mean([peak_mean(bw, s) for s in stretches]) < 2 * g.config.ctcf_background
    assert [s for s in g.sites if s.role != "gc_stretch"] != []


def test_decoy_counts_follow_their_knobs(tmp_path):
    g = _knob_genome(tmp_path, decoy_peaks_per_mb=20, motif_only_per_mb=5)
    roles = [r[6] for r in _truth_rows(g.root)]
    assert roles.count("decoy_peak") == 8 and roles.count("motif_only") == 2


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"weak_fraction": 1.5}, "weak_fraction"),
        ({"weak_relscore_range": (0.8, 0.7)}, "weak_relscore_range"),
        ({"redundant_fraction": 0.5, "redundant_offset_bp": 5}, "redundant_offset_bp"),
        ({"gc_stretches_per_mb": 1, "gc_stretch_length": 10_000}, "gc_stretch_length"),
    ],
)
def test_bad_knobs_are_refused(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        generate(small_config(**changes), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_graded_config_round_trips(tmp_path):
    config = small_config(weak_fraction=0.3, orientation_rule=True, weak_relscore_range=(0.65, 0.75))
    g = generate(config, tmp_path / "g")
    again = SyntheticGenome.open(g.root)
    assert again.config == config and again.sites == g.sites

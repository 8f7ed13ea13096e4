"""Rearrangements (segments, VCF breakends) and haplotypes: placement, partners, the engine, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import TOY_CONFIG, toy_spec_dict
from screening.cli import main
from screening.compute.engine import Span, load_span, perturbed_items, rearranged_span, run_unit, stack_spans
from screening.core.encode import encode, reverse_complement
from screening.io.genome import Genome
from screening.io.vcf import VcfError, read_breakends
from screening.maps.align import BinAlignment, pieces_index
from screening.maps.score import score_maps
from screening.models.base import WindowGeometry
from screening.perturb.rearrange import (
    Inserted,
    Rearrangement,
    RearrangementError,
    Segment,
    junction_segments,
    place,
)
from screening.plan import plan_screen
from screening.spec import SpecError, parse_spec

SIZES = {"chr1": 6_000, "chr2": 3_000}
WINDOW = 512
GEOMETRY = WindowGeometry(WINDOW, 32, 16)


# --- placement (pure) -----------------------------------------------------------------------------------


def test_a_translocation_has_one_partner_per_chromosome_placed_as_in_the_rearranged_window():
    translocation = Rearrangement("t1", (Segment("chr1", 1_000, 2_000), Segment("chr2", 500, 1_500)))
    placed = place(translocation, WINDOW, SIZES)
    # the window is centred on the junction: 256 bp of each side
    assert [(p.lo, p.hi, p.chrom, p.ref_lo, p.ref_hi, p.strand) for p in placed.pieces] == [
        (0, 256, "chr1", 1_744, 2_000, "+"),
        (256, 512, "chr2", 500, 756, "+"),
    ]
    first, second = placed.partners
    assert (first.chrom, first.window_start, first.pieces) == ("chr1", 1_744, ((0, 256, 0, 256, "+"),))
    assert (second.chrom, second.window_start, second.pieces) == ("chr2", 244, ((256, 512, 256, 512, "+"),))
    assert placed.description == "chr1:1744-2000:+,chr2:500-756:+"


def test_an_inversion_in_place_has_one_partner_and_flanking_deletions_give_one_per_side():
    inversion = Rearrangement(
        "inv", (Segment("chr1", 1_000, 2_000), Segment("chr1", 2_000, 2_100, "-"), Segment("chr1", 2_100, 3_000))
    )
    [partner] = place(inversion, WINDOW, SIZES).partners
    assert partner.window_start == 2_050 - 256
    assert partner.pieces[1] == (206, 306, 206, 306, "-")
    with_deletions = Rearrangement(
        "inv_del", (Segment("chr1", 1_000, 2_000), Segment("chr1", 2_050, 2_100, "-"), Segment("chr1", 2_200, 3_000))
    )
    partners = place(with_deletions, WINDOW, SIZES).partners
    assert len(partners) == 3 and len({p.window_start for p in partners}) == 3


def test_a_partner_near_a_chromosome_start_keeps_its_window_on_the_chromosome():
    placed = place(Rearrangement("t", (Segment("chr1", 1_000, 2_000), Segment("chr2", 0, 1_000, "-"))), WINDOW, SIZES)
    second = placed.partners[1]
    # chr2:[744, 1000) read backwards fills [256, 512): its ideal window starts at 488, inside chr2
    assert (second.window_start, second.pieces) == (488, ((256, 512, 256, 512, "-"),))
    near = place(Rearrangement("n", (Segment("chr1", 1_000, 2_000), Segment("chr2", 0, 300))), WINDOW, {**SIZES})
    assert near.partners[1].window_start == 0 and near.partners[1].pieces == ((256, 512, 0, 256, "+"),)


@pytest.mark.parametrize(
    "segments, message",
    [
        ((Segment("chr1", 1_900, 2_000), Segment("chr2", 500, 1_500)), "do not cover the 512 bp model window"),
        ((Segment("chr1", 1_000, 2_000), Segment("chr9", 500, 1_500)), "'chr9', which the genome lacks"),
        ((Segment("chr1", 1_000, 2_000), Segment("chr2", 2_500, 3_500)), "runs past the end of chr2"),
    ],
)
def test_rearrangements_that_cannot_fill_a_window_are_refused_by_name(segments, message):
    with pytest.raises(RearrangementError, match=message) as err:
        place(Rearrangement("bad", segments, "perturbations.0.rearrangements.3"), WINDOW, SIZES)
    assert "rearrangement 'bad' (perturbations.0.rearrangements.3)" in str(err.value)


def test_junction_segments_take_flank_bp_on_each_side_on_their_strands():
    assert junction_segments(("chr1", 1_000, "+"), ("chr2", 500, "+"), 300, SIZES) == (
        Segment("chr1", 700, 1_000),
        Segment("chr2", 500, 800),
    )
    assert junction_segments(("chr1", 1_000, "-"), ("chr2", 500, "-"), 300, SIZES) == (
        Segment("chr1", 1_000, 1_300, "-"),
        Segment("chr2", 200, 500, "-"),
    )
    assert junction_segments(("chr1", 100, "+"), ("chr2", 2_900, "+"), 300, SIZES) == (
        Segment("chr1", 0, 100),
        Segment("chr2", 2_900, 3_000),
    )  # clipped: place() then says it is too short


def test_pieces_index_pairs_the_bins_of_each_piece():
    assert pieces_index([(0, 256, 0, 256, "+")], 32, 16).tolist() == list(range(8)) + [-1] * 8
    assert pieces_index([(0, 512, 0, 512, "-")], 32, 16).tolist() == list(range(15, -1, -1))
    # a piece moved by a whole bin, and one whose bins straddle the piece's ends: only whole bins pair
    assert pieces_index([(256, 512, 224, 480, "+")], 32, 16).tolist() == [-1] * 7 + list(range(8, 16)) + [-1]
    assert pieces_index([(100, 300, 100, 300, "+")], 32, 16).tolist() == [-1] * 4 + [4, 5, 6, 7, 8] + [-1] * 7


# --- the engine on the toy genome and model -----------------------------------------------------------


def spec_of(perturbation: dict, **changes):
    raw = {
        "model": {"random_seed": 0, "config": TOY_CONFIG},
        "genome": {"fasta": "/x.fa"},
        "perturbations": [perturbation],
        "execution": {"chunk_size": 8},
        "output": {"store": "/x.zarr"},
        **changes,
    }
    return parse_spec(raw)


SCORES = ["impact_mean_abs", "mse", "mse_aligned", "pearson_aligned", "impact_mean_abs_aligned"]
TRANSLOCATION = {
    "name": "t1",
    "segments": [
        {"chrom": "chr1", "start": 1_500, "end": 2_500},
        {"chrom": "chr2", "start": 1_000, "end": 2_000, "strand": "-"},
    ],
}


def test_a_translocation_is_scored_against_both_partners(toy, one_thread):
    adapter, genome, tracks = toy
    spec = spec_of({"kind": "rearrangement", "scores": SCORES, "rearrangements": [TRANSLOCATION]})
    plan = plan_screen(spec, [], SIZES, adapter.geometry, genome)
    [layout] = plan.layouts
    assert layout.scores == [f"{s}_p{k}" for s in SCORES for k in (0, 1)]
    assert layout.labels["partner_p0"].tolist() == ["chr1:2244-2756"]
    assert layout.labels["partner_p1"].tolist() == ["chr2:1488-2000"]
    payload = plan.payload(plan.units[0])
    values = run_unit(adapter, genome, tracks, spec.perturbations[0], "chr1", payload).values
    # the rearranged input: chr1 up to 2,500, then chr2 up to 2,000 read backwards
    placed = payload["rearrangements"][0]
    span = rearranged_span(genome, tracks, placed)
    assert span.codes.tolist() == [
        *genome.fetch("chr1", 2_244, 2_500),
        *reverse_complement(genome.fetch("chr2", 1_744, 2_000)),
    ]
    assert np.allclose(span.tracks[:, 256:], tracks.fetch("chr2", 1_744, 2_000)[:, ::-1])
    # each partner's scores equal a direct computation on the predicted maps
    references = [genome.fetch(p.chrom, p.window_start, p.window_start + WINDOW) for p in placed.partners]
    reference_tracks = [tracks.fetch(p.chrom, p.window_start, p.window_start + WINDOW) for p in placed.partners]
    maps = adapter.predict(np.stack([span.codes, *references]), np.stack([span.tracks, *reference_tracks]))
    for k, partner in enumerate(placed.partners):
        index = pieces_index(partner.pieces, 32, 16)
        assert (index >= 0).sum() == 8  # the 8 bins of its own half
        bins = np.flatnonzero(index >= 0)
        alignment = BinAlignment(bins, index[bins], 16)  # the numpy scores take alignments (in any bin order)
        expected = score_maps(maps[k + 1][None], maps[0][None], SCORES, [alignment], {"position": np.array([8])})
        for name in SCORES:
            assert values[f"{name}_p{k}"][0] == pytest.approx(float(expected[name][0]), rel=1e-4, abs=1e-9), (name, k)
    assert np.isfinite([values[f"{s}_p{k}"][0] for s in SCORES for k in (0, 1)]).all()


def test_an_inversion_as_segments_scores_as_the_inversion_kind(toy, one_thread):
    """Segments around an inverted interval fill the same window as the inversion kind centred on it."""
    adapter, genome, tracks = toy
    segments = [
        {"chrom": "chr1", "start": 1_000, "end": 2_000},
        {"chrom": "chr1", "start": 2_000, "end": 2_040, "strand": "-"},
        {"chrom": "chr1", "start": 2_040, "end": 3_000},
    ]
    spec = spec_of(
        {
            "kind": "rearrangement",
            "scores": ["impact_mean_abs", "mse"],
            "max_partners": 1,
            "rearrangements": [{"name": "inv", "segments": segments}],
        }
    )
    plan = plan_screen(spec, [], SIZES, adapter.geometry, genome)
    got = run_unit(adapter, genome, tracks, spec.perturbations[0], "chr1", plan.payload(plan.units[0])).values
    inversion = spec_of(
        {"kind": "inversion", "width": 40, "step": 40, "scores": ["impact_mean_abs", "mse"]},
        regions=["chr1:2,000-2,040"],
    )
    plan = plan_screen(inversion, inversion.parsed_regions(), SIZES, adapter.geometry, genome)
    expected = run_unit(adapter, genome, tracks, inversion.perturbations[0], "chr1", plan.payload(plan.units[0])).values
    for name in ("impact_mean_abs", "mse"):
        assert got[f"{name}_p0"][0] == pytest.approx(expected[name][0], rel=1e-5)


def bnd_vcf(path: Path, genome: Genome, records: list[str] | None = None) -> Path:
    t, p = "ACGT"[genome.fetch("chr1", 1_999, 2_000)[0]], "ACGT"[genome.fetch("chr2", 1_199, 1_200)[0]]
    records = records or [
        f"chr1\t2000\tbnd_a\t{t}\t{t}[chr2:1200[\t.\tPASS\tSVTYPE=BND;MATEID=bnd_b",
        f"chr2\t1200\tbnd_b\t{p}\t]chr1:2000]{p}\t.\tPASS\tSVTYPE=BND;MATEID=bnd_a",
    ]
    path.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "\n".join(records) + "\n")
    return path


def test_a_breakend_pair_is_planned_as_a_translocation(toy, tmp_path):
    adapter, genome, _ = toy
    spec = spec_of({"kind": "rearrangement", "vcf": str(bnd_vcf(tmp_path / "b.vcf", genome))})
    plan = plan_screen(spec, [], SIZES, adapter.geometry, genome)
    [layout] = plan.layouts
    assert layout.labels["name"].tolist() == ["bnd_a"]
    # t[p[ at chr1:2000: chr1 up to and including base 1,999 (0-based), then chr2 from base 1,199 on
    assert layout.labels["segments"].tolist() == ["chr1:1744-2000:+,chr2:1199-1455:+"]
    assert (layout.start.tolist(), layout.end.tolist()) == ([1_744], [2_000])
    assert plan.windows(WINDOW) == {"chr1": [(1_744, 2_256)], "chr2": [(943, 1_455)]}


def test_breakends_that_cannot_be_used_fail_or_are_skipped(toy, tmp_path):
    adapter, genome, _ = toy
    a, e1, e2 = _base(genome, "chr1", 3_000), _base(genome, "chr1", 4_000), _base(genome, "chr2", 100)
    lonely = f"chr1\t3000\tlonely\t{a}\t{a}[chr2:100[\t.\tPASS\tSVTYPE=BND"
    # a junction 100 bp from chr2's start: too little sequence on that side for a window centred on it
    edge = [
        f"chr1\t4000\tedge_a\t{e1}\t]chr2:100]{e1}\t.\t.\tMATEID=edge_b",
        f"chr2\t100\tedge_b\t{e2}\t{e2}[chr1:4000[\t.\t.\tMATEID=edge_a",
    ]
    vcf = bnd_vcf(tmp_path / "b.vcf", genome)
    vcf.write_text(vcf.read_text() + "\n".join([lonely, *edge]) + "\n")
    with pytest.raises(VcfError, match="b.vcf:5 breakend lonely has no INFO MATEID"):
        plan_screen(spec_of({"kind": "rearrangement", "vcf": str(vcf)}), [], SIZES, adapter.geometry, genome)
    with pytest.raises(
        VcfError, match=r"edge_a' \(.*e.vcf:3, mate edge_b line 4\).*do not cover the 512 bp model window"
    ):
        plan_screen(
            spec_of({"kind": "rearrangement", "vcf": str(bnd_vcf(tmp_path / "e.vcf", genome, edge))}),
            [],
            SIZES,
            adapter.geometry,
            genome,
        )
    skipping = spec_of({"kind": "rearrangement", "vcf": str(vcf)}, invalid_policy="skip")
    plan = plan_screen(skipping, [], SIZES, adapter.geometry, genome)
    assert plan.layouts[0].labels["name"].tolist() == ["bnd_a"]
    skipped = plan.skipped["rearrangements"]
    assert skipped["count"] == 2 and any("lonely" in item for item in skipped["items"])
    assert any("edge_a" in item and "do not cover" in item for item in skipped["items"])


def test_more_partners_than_max_partners_are_refused():
    spec = spec_of(
        {
            "kind": "rearrangement",
            "rearrangements": [
                {
                    "name": "three",
                    "segments": [
                        {"chrom": "chr1", "start": 1_000, "end": 2_000},
                        {"chrom": "chr2", "start": 1_000, "end": 1_100},
                        {"chrom": "chr1", "start": 4_000, "end": 5_000},
                    ],
                }
            ],
        }
    )
    with pytest.raises(ValueError, match="'three'.*3 partner loci.*raise max_partners"):
        plan_screen(spec, [], SIZES, GEOMETRY, None)


@pytest.mark.parametrize(
    "perturbation, message",
    [
        ({"kind": "rearrangement"}, "exactly one of 'rearrangements'"),
        ({"kind": "rearrangement", "vcf": "/x.vcf", "rearrangements": []}, "exactly one of 'rearrangements'"),
        (
            {
                "kind": "rearrangement",
                "rearrangements": [{"name": "a", "segments": [{"chrom": "chr1", "start": 5, "end": 5}]}],
            },
            "end must be greater than start",
        ),
        (
            {
                "kind": "rearrangement",
                "rearrangements": [{"name": "a", "segments": [{"chrom": "chr1", "start": 0, "end": 5, "strand": "x"}]}],
            },
            "strand",
        ),
        ({"kind": "rearrangement", "vcf": "/x.vcf", "keep_maps": 2, "shifts": [-8, 8]}, "keep_maps with shifts"),
        ({"kind": "rearrangement", "vcf": "/x.vcf", "roi": {"rows": "chr1:0-10", "cols": "chr1:0-10"}}, "roi"),
        (
            {
                "kind": "rearrangement",
                "rearrangements": [
                    {"name": "a", "segments": [{"sequence": "ACGX"}, {"chrom": "chr1", "start": 0, "end": 5}]}
                ],
            },
            r"rearrangement 'a', segment 0: the inserted sequence 'ACGX' holds 'X'",
        ),
        (
            {
                "kind": "rearrangement",
                "rearrangements": [
                    {"name": "a", "segments": [{"sequence": ""}, {"chrom": "chr1", "start": 0, "end": 5}]}
                ],
            },
            r"rearrangement 'a', segment 0: the inserted sequence is empty",
        ),
        (
            {
                "kind": "rearrangement",
                "rearrangements": [{"name": "a", "segments": [{"sequence": "AC", "chrom": "chr1"}]}],
            },
            r"either 'sequence' .* or 'chrom', 'start', 'end'",
        ),
        (
            {"kind": "rearrangement", "rearrangements": [{"name": "a", "segments": [{"chrom": "chr1", "start": 0}]}]},
            r"give 'chrom', 'start' and 'end'",
        ),
        (
            {"kind": "rearrangement", "rearrangements": [{"name": "a", "segments": [{"sequence": "ACGT"}]}]},
            r"rearrangement 'a': every segment is inserted sequence",
        ),
        ({"kind": "variants", "vcf": "/x.vcf", "haplotype": 1}, "haplotype needs 'sample'"),
    ],
)
def test_spec_refuses_bad_rearrangements_and_haplotypes(perturbation, message):
    with pytest.raises(SpecError, match=message):
        spec_of(perturbation)


# --- the CLI: bad breakends exit 2 before any store; a translocation screen end to end -----------------


def _spec_file(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("command", ["validate", "run"])
def test_unpaired_breakend_exits_2_naming_the_record(toy_paths, tmp_path, capsys, command):
    vcf = tmp_path / "b.vcf"
    vcf.write_text(
        "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        "chr1\t2000\tbnd_x\tA\tA[chr2:1200[\t.\tPASS\tSVTYPE=BND;MATEID=bnd_y\n"
    )
    raw = toy_spec_dict(
        toy_paths, tmp_path / "out.zarr", regions=[], perturbations=[{"kind": "rearrangement", "vcf": str(vcf)}]
    )
    argv = [command, str(_spec_file(tmp_path, raw))] + (["--no-progress", "--no-plots"] if command == "run" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("screening: error:") and "bnd_x" in err and "b.vcf:3" in err and "Traceback" not in err
    assert not (tmp_path / "out.zarr").exists()


def test_translocation_and_haplotype_screen_end_to_end(ray_session, toy_paths, tmp_path, capsys):
    from screening import open_results

    genome = Genome(toy_paths["fasta"])
    raw = toy_spec_dict(toy_paths, tmp_path / "r.zarr", regions=[])
    raw["perturbations"] = [
        {
            "kind": "rearrangement",
            "name": "bnd",
            "vcf": str(bnd_vcf(tmp_path / "b.vcf", genome)),
            "scores": ["impact_mean_abs", "mse_aligned"],
            "keep_maps": 1,
        },
        {
            "kind": "rearrangement",
            "name": "averaged",
            "rearrangements": [WITH_INSERTION],
            "scores": ["mse_aligned"],
            "shifts": [-32, 0, 32],
            "strand_average": True,
            "keep_placements": True,
        },
        {
            "kind": "variants",
            "name": "hap",
            "vcf": str(haplotype_vcf(tmp_path / "h.vcf", genome)),
            "sample": "S1",
            "scores": ["impact_mean_abs", "mse_aligned"],
        },
    ]
    assert main(["run", str(_spec_file(tmp_path, raw)), "--no-progress"]) == 0
    assert (tmp_path / "r_plots" / "top_hit_bnd.png").is_file()  # the rearranged map beside its first partner's
    results = open_results(tmp_path / "r.zarr")
    bnd = results.query("chr1", analysis="bnd").compute()
    assert bnd["name"].values.tolist() == ["bnd_a"] and bnd["partner_p1"].values.tolist() == ["chr2:943-1455"]
    assert np.isfinite([bnd[f"mse_aligned_p{k}"].values[0] for k in (0, 1)]).all()
    kept = results.top_maps("chr1", analysis="bnd")
    assert kept.shape == (1, 16, 16) and kept["start"].values.tolist() == [1_744]
    assert np.isnan(kept.values[0, :8, 8:]).all() and np.isfinite(kept.values[0, :8, :8]).all()
    averaged = results.query("chr1", analysis="averaged").compute()
    assert averaged["segments"].values.tolist() == ["chr1:2276-2500:+,ins:64bp,chr2:1000-1224:+"]
    assert np.isfinite(averaged["mse_aligned_p1"].values).all() and "mse_aligned_at-32_rc_p1" in averaged
    hap = results.query("chr1", analysis="hap").compute()
    assert hap["haplotype"].values.tolist() == [1, 1, 2] and hap["n_joint"].values.tolist() == [2, 2, 1]
    capsys.readouterr()


# --- haplotypes ------------------------------------------------------------------------------------------


def _base(genome: Genome, chrom: str, pos: int) -> str:
    return "ACGT"[genome.fetch(chrom, pos - 1, pos)[0]]


def _other(genome: Genome, chrom: str, pos: int) -> str:
    return "ACGT"[(genome.fetch(chrom, pos - 1, pos)[0] + 1) % 4]


def haplotype_vcf(path: Path, genome: Genome, extra: str = "") -> Path:
    """S1 carries v1 (SNV) and v2 (2 bp deletion) on haplotype 1, v3 (an SNV far away) on haplotype 2."""
    b = lambda pos: _base(genome, "chr1", pos)  # noqa: E731
    path.write_text(
        "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\n"
        f"chr1\t2001\tv1\t{b(2001)}\t{_other(genome, 'chr1', 2001)}\t.\t.\t.\tGT\t1|0\n"
        f"chr1\t2101\tv2\t{b(2101)}{b(2102)}{b(2103)}\t{b(2101)}\t.\t.\t.\tGT\t1|0\n"
        f"chr1\t3001\tv3\t{b(3001)}\t{_other(genome, 'chr1', 3001)}\t.\t.\t.\tGT\t0|1\n" + extra
    )
    return path


def _haplotype_plan(genome, vcf, **changes):
    spec = spec_of(
        {
            "kind": "variants",
            "vcf": str(vcf),
            "sample": "S1",
            "scores": ["impact_mean_abs", "mse_aligned"],
            **changes.pop("perturbation", {}),
        },
        **changes,
    )
    return spec, plan_screen(spec, [], SIZES, GEOMETRY, genome)


def test_a_haplotypes_variants_in_one_window_are_applied_together(toy, tmp_path, one_thread):
    adapter, genome, tracks = toy
    spec, plan = _haplotype_plan(genome, haplotype_vcf(tmp_path / "h.vcf", genome))
    [layout] = plan.layouts
    assert layout.labels["id"].tolist() == ["v1", "v2", "v3"]
    assert layout.labels["haplotype"].tolist() == [1, 1, 2] and layout.labels["n_joint"].tolist() == [2, 2, 1]
    payload = plan.payload(plan.units[0])
    items = list(perturbed_items(spec.perturbations[0], genome, tracks, "chr1", payload, WINDOW))
    # v1's window holds v1 and v2: both applied, in reference coordinates of that window
    first, reference = items[0]
    ws = int(payload["window_start"][0])
    expected = reference.codes.copy()
    expected[2_000 - ws] = "ACGT".index(_other(genome, "chr1", 2001))
    expected = np.concatenate([expected[: 2_101 - ws], expected[2_103 - ws :], [4, 4]])  # padding: zero, the tail N
    assert first.span.codes.tolist() == expected.tolist()
    assert first.parts == ((2_000 - ws, 1, 1), (2_101 - ws, 2, 0))
    # jointly vs one at a time: v1 alone (no sample) differs; v3, alone on its haplotype, is the same
    joint = run_unit(adapter, genome, tracks, spec.perturbations[0], "chr1", payload).values
    single_spec = spec_of(
        {"kind": "variants", "vcf": str(tmp_path / "h.vcf"), "scores": ["impact_mean_abs", "mse_aligned"]}
    )
    single_plan = plan_screen(single_spec, [], SIZES, GEOMETRY, genome)
    single = run_unit(
        adapter, genome, tracks, single_spec.perturbations[0], "chr1", single_plan.payload(single_plan.units[0])
    ).values
    assert single_plan.layouts[0].labels["id"].tolist() == ["v1", "v2", "v3"]
    assert joint["impact_mean_abs"][2] == pytest.approx(single["impact_mean_abs"][2], rel=1e-6)
    assert abs(joint["impact_mean_abs"][0] - single["impact_mean_abs"][0]) > 1e-3 * single["impact_mean_abs"][0]
    assert np.isfinite(joint["mse_aligned"]).all()


def test_one_haplotype_only_and_overlaps_refused_or_skipped(toy, tmp_path):
    _, genome, _ = toy
    vcf = haplotype_vcf(tmp_path / "h.vcf", genome)
    _, plan = _haplotype_plan(genome, vcf, perturbation={"haplotype": 2})
    assert plan.layouts[0].labels["id"].tolist() == ["v3"]
    overlapping = haplotype_vcf(
        tmp_path / "o.vcf",
        genome,
        f"chr1\t2102\tv4\t{_base(genome, 'chr1', 2102)}\t{_other(genome, 'chr1', 2102)}\t.\t.\t.\tGT\t1|1\n",
    )
    with pytest.raises(VcfError, match=r"o.vcf:6 v4 chr1:2102 overlaps v2 \(line 4\) on haplotype 1 of sample S1"):
        _haplotype_plan(genome, overlapping)
    _, plan = _haplotype_plan(genome, overlapping, invalid_policy="skip")
    assert plan.layouts[0].labels["id"].tolist() == ["v1", "v2", "v4", "v3"]  # v4 stays on haplotype 2
    assert plan.layouts[0].labels["haplotype"].tolist() == [1, 1, 2, 2]
    assert plan.skipped["haplotypes_S1"]["count"] == 1


# --- inserted sequence -----------------------------------------------------------------------------------

INSERTED = "ACGTTGCA" * 8  # 64 bp: two bins of the toy model
WITH_INSERTION = {
    "name": "t_ins",
    "segments": [
        {"chrom": "chr1", "start": 1_500, "end": 2_500},
        {"sequence": INSERTED.lower()},  # either case
        {"chrom": "chr2", "start": 1_000, "end": 2_000},
    ],
}


def test_inserted_sequence_is_a_piece_of_no_partner():
    rearrangement = Rearrangement(
        "i", (Segment("chr1", 1_500, 2_500), Inserted(INSERTED), Segment("chr2", 1_000, 2_000))
    )
    placed = place(rearrangement, WINDOW, SIZES)
    # the window is centred midway between the junctions on either side of the 64 inserted bases
    assert [(p.lo, p.hi, p.chrom, p.ref_lo, p.ref_hi, p.sequence) for p in placed.pieces] == [
        (0, 224, "chr1", 2_276, 2_500, ""),
        (224, 288, "", 0, 64, INSERTED),
        (288, 512, "chr2", 1_000, 1_224, ""),
    ]
    assert [(p.chrom, p.window_start, p.pieces) for p in placed.partners] == [
        ("chr1", 2_276, ((0, 224, 0, 224, "+"),)),
        ("chr2", 712, ((288, 512, 288, 512, "+"),)),
    ]
    assert placed.description == "chr1:2276-2500:+,ins:64bp,chr2:1000-1224:+"
    short = place(
        Rearrangement("s", (Segment("chr1", 1_000, 2_000), Inserted("acgn"), Segment("chr2", 0, 1_000))), WINDOW, SIZES
    )
    assert short.description.split(",")[1] == "ins:ACGN"
    # no bin of either partner pairs with the inserted bins 7 and 8
    for partner in placed.partners:
        assert not {7, 8} & set(pieces_index(partner.pieces, 32, 16).tolist())


@pytest.mark.parametrize("sequence, message", [("", "empty"), ("ACXG", "letters 'X' are not A, C, G, T or N")])
def test_bad_inserted_sequence_is_refused(sequence, message):
    with pytest.raises(RearrangementError, match=message):
        Inserted(sequence)


def test_a_window_of_inserted_sequence_only_is_refused():
    lonely = Rearrangement(
        "only", (Segment("chr1", 0, 1_000), Inserted("A" * 2_000), Segment("chr2", 0, 1_000)), "here"
    )
    with pytest.raises(RearrangementError, match=r"'only' \(here\): its model window holds inserted sequence only"):
        place(lonely, WINDOW, SIZES)


def test_junction_segments_put_inserted_bases_between_the_sides():
    assert junction_segments(("chr1", 1_000, "+"), ("chr2", 500, "-"), 300, SIZES, "TTG") == (
        Segment("chr1", 700, 1_000),
        Inserted("TTG"),
        Segment("chr2", 200, 500, "-"),
    )


def test_inserted_bases_are_read_in_the_window_with_zero_tracks_and_masked_for_every_partner(toy, one_thread):
    adapter, genome, tracks = toy
    spec = spec_of({"kind": "rearrangement", "scores": SCORES, "rearrangements": [WITH_INSERTION]})
    plan = plan_screen(spec, [], SIZES, adapter.geometry, genome)
    [layout] = plan.layouts
    assert layout.labels["segments"].tolist() == ["chr1:2276-2500:+,ins:64bp,chr2:1000-1224:+"]
    payload = plan.payload(plan.units[0])
    placed = payload["rearrangements"][0]
    span = rearranged_span(genome, tracks, placed)
    assert span.codes.tolist() == [
        *genome.fetch("chr1", 2_276, 2_500),
        *encode(INSERTED),
        *genome.fetch("chr2", 1_000, 1_224),
    ]
    assert (span.tracks[:, 224:288] == 0).all() and np.allclose(
        span.tracks[:, :224], tracks.fetch("chr1", 2_276, 2_500)
    )
    values = run_unit(adapter, genome, tracks, spec.perturbations[0], "chr1", payload).values
    expected = _direct_scores(adapter, genome, tracks, placed, SCORES)
    for name, value in expected.items():
        assert values[name][0] == pytest.approx(value, rel=1e-4, abs=1e-9), name


def _direct_scores(adapter, genome, tracks, placed, scores, reverse=False, maps=None, position=8) -> dict[str, float]:
    """Each partner's scores computed by hand: the rearranged and reference inputs predicted (on the reverse
    strand: reverse complemented, the maps flipped back), scored with the numpy scores on the pieces' bins."""
    if maps is None:
        maps = _direct_maps(adapter, genome, tracks, placed, reverse)
    out = {}
    for k, partner in enumerate(placed.partners):
        index = pieces_index(partner.pieces, 32, 16)
        bins = np.flatnonzero(index >= 0)
        expected = score_maps(
            maps[k + 1][None],
            maps[0][None],
            scores,
            [BinAlignment(bins, index[bins], 16)],
            {"position": np.array([position]), "window": 3},
        )
        out.update({f"{name}_p{k}": float(expected[name][0]) for name in scores})
    return out


def _direct_maps(adapter, genome, tracks, placed, reverse=False) -> np.ndarray:
    spans = [rearranged_span(genome, tracks, placed)]
    spans += [load_span(genome, tracks, p.chrom, p.window_start, p.window_start + WINDOW) for p in placed.partners]
    if reverse:
        spans = [Span(reverse_complement(s.codes), s.tracks[:, ::-1].copy()) for s in spans]
    maps = adapter.predict(*stack_spans(spans))
    return maps[:, ::-1, ::-1] if reverse else maps


def _ins_vcf(path: Path, genome: Genome, first_alt: str, mate_alt: str) -> Path:
    return bnd_vcf(
        path,
        genome,
        [
            f"chr1\t2000\tbnd_a\t{_base(genome, 'chr1', 2000)}\t{first_alt}\t.\tPASS\tSVTYPE=BND;MATEID=bnd_b",
            f"chr2\t1200\tbnd_b\t{_base(genome, 'chr2', 1200)}\t{mate_alt}\t.\tPASS\tSVTYPE=BND;MATEID=bnd_a",
        ],
    )


def test_breakends_that_insert_bases_read_them_along_the_junction(toy, tmp_path):
    adapter, genome, _ = toy
    t, p = _base(genome, "chr1", 2000), _base(genome, "chr2", 1200)
    # t[p[ and its mate ]p]t, both reading chr1 then chr2 forwards: the same inserted bases
    forward = _ins_vcf(tmp_path / "f.vcf", genome, f"{t}ttg[chr2:1200[", f"]chr1:2000]TTG{p}")
    [junction] = read_breakends(forward, genome).junctions
    assert (junction.left, junction.right, junction.inserted) == (("chr1", 2_000, "+"), ("chr2", 1_199, "+"), "TTG")
    spec = spec_of({"kind": "rearrangement", "vcf": str(forward)})
    [layout] = plan_screen(spec, [], SIZES, adapter.geometry, genome).layouts
    assert layout.labels["segments"].tolist() == ["chr1:1745-2000:+,ins:TTG,chr2:1199-1453:+"]
    # t]p] and its mate p]t]: each reads the other strand, so the mate writes the bases reverse complemented
    flipped = _ins_vcf(tmp_path / "r.vcf", genome, f"{t}AAC]chr2:1200]", f"{p}GTT]chr1:2000]")
    [junction] = read_breakends(flipped, genome).junctions
    assert (junction.left, junction.right, junction.inserted) == (("chr1", 2_000, "+"), ("chr2", 1_200, "-"), "AAC")
    # [p[t: the reverse complement of chr2 from p, the inserted bases, then chr1 from t
    before = _ins_vcf(tmp_path / "b.vcf", genome, f"[chr2:1200[GG{t}", f"[chr1:2000[CC{p}")
    [junction] = read_breakends(before, genome).junctions
    assert (junction.left, junction.right, junction.inserted) == (("chr2", 1_199, "-"), ("chr1", 1_999, "+"), "GG")


@pytest.mark.parametrize(
    "alts, message",
    [
        (
            ("{t}AAC]chr2:1200]", "{p}AAC]chr1:2000]"),
            r"bnd_a and its mate bnd_b \(line 4\) insert different bases.*'AAC' vs 'GTT'",
        ),
        (("{t}TTG[chr2:1200[", "]chr1:2000]{p}"), "insert different bases"),
        (("G{t}[chr2:1200[", "]chr1:2000]G{p}"), "its first base 'G' is not the REF base"),
        (("{t}T[chr2:1200[A", "]chr1:2000]T{p}"), "REF base on exactly one side"),
        (("{t}TXG[chr2:1200[", "]chr1:2000]TXG{p}"), "is not breakend notation"),
    ],
)
def test_malformed_or_mismatched_insertions_at_a_junction_are_refused_naming_the_record(toy, tmp_path, alts, message):
    _, genome, _ = toy
    t, p = _base(genome, "chr1", 2000), _base(genome, "chr2", 1200)
    if "G{t}[" in alts[0] and t == "G":  # the first base must differ from REF
        alts = ("C{t}[chr2:1200[", "]chr1:2000]C{p}")
        message = message.replace("'G'", "'C'")
    vcf = _ins_vcf(tmp_path / "m.vcf", genome, alts[0].format(t=t), alts[1].format(p=p))
    with pytest.raises(VcfError, match=r"m.vcf:3 breakend .*bnd_a") as err:
        read_breakends(vcf, genome)
    assert err.match(message)
    assert read_breakends(vcf, genome, policy="skip").skipped  # listed with invalid_policy: skip


def test_a_bad_inserted_sequence_or_breakend_exits_2(toy_paths, tmp_path, capsys):
    genome = Genome(toy_paths["fasta"])
    t, p = _base(genome, "chr1", 2000), _base(genome, "chr2", 1200)
    vcf = _ins_vcf(tmp_path / "m.vcf", genome, f"{t}AAC]chr2:1200]", f"{p}AAC]chr1:2000]")
    bad_sequence = {
        **WITH_INSERTION,
        "segments": [*WITH_INSERTION["segments"][:1], {"sequence": "ACGU"}, *WITH_INSERTION["segments"][2:]],
    }
    for perturbation, named in (
        ({"kind": "rearrangement", "vcf": str(vcf)}, "bnd_a"),
        ({"kind": "rearrangement", "rearrangements": [bad_sequence]}, "rearrangement 't_ins', segment 1"),
    ):
        raw = toy_spec_dict(toy_paths, tmp_path / "out.zarr", regions=[], perturbations=[perturbation])
        assert main(["validate", str(_spec_file(tmp_path, raw))]) == 2
        err = capsys.readouterr().err
        assert err.startswith("screening: error:") and named in err and "Traceback" not in err


# --- shifts and strand averaging -------------------------------------------------------------------------


def test_shifted_placements_keep_the_partners_with_their_own_reference_windows():
    translocation = Rearrangement("t1", (Segment("chr1", 1_000, 2_000), Segment("chr2", 500, 1_500)))
    placed = place(translocation, WINDOW, SIZES, [-64, 0, 64])
    assert [s for s, _ in placed.shifted] == [-64, 64] and placed.at(0) is placed
    moved = placed.at(64)
    assert moved.description == "chr1:1808-2000:+,chr2:500-820:+"
    assert [(p.chrom, p.window_start, p.pieces) for p in moved.partners] == [
        ("chr1", 1_808, ((0, 192, 0, 192, "+"),)),
        ("chr2", 308, ((192, 512, 192, 512, "+"),)),
    ]
    with pytest.raises(KeyError):
        placed.at(32)
    with pytest.raises(RearrangementError, match=r"'t1': .*shifted by \+800 bp \(shifts\).*choose smaller shifts"):
        place(translocation, WINDOW, SIZES, [0, 800])
    # a shift that moves a short segment out of the window changes the partners: refused
    three = Rearrangement(
        "three", (Segment("chr1", 1_000, 2_000), Segment("chr2", 1_000, 1_100), Segment("chr1", 4_000, 5_000))
    )
    assert len(place(three, WINDOW, SIZES).partners) == 3
    with pytest.raises(RearrangementError, match=r"'three': shifted by \+300 bp \(shifts\), its window's partner loci"):
        place(three, WINDOW, SIZES, [0, 300])


def test_shift_and_strand_averaging_of_a_translocation(toy, one_thread):
    adapter, genome, tracks = toy
    scores = ["mse", "mse_aligned", "insulation_delta"]
    averaged = {
        "kind": "rearrangement",
        "scores": scores,
        "rearrangements": [TRANSLOCATION, WITH_INSERTION],
        "shifts": [-64, 0, 64],
        "strand_average": True,
        "keep_placements": True,
        "insulation_window": 3,  # bins: the toy map has 16
    }
    spec = spec_of(averaged)
    plan = plan_screen(spec, [], SIZES, adapter.geometry, genome)
    [layout] = plan.layouts
    stored = spec.perturbations[0].stored_scores
    assert layout.scores == [f"{name}_p{k}" for name in stored for k in (0, 1)]
    assert "mse_aligned_at-64_rc_p1" in layout.scores
    payload = plan.payload(plan.units[0])
    # the probed windows hold every placement's reference windows
    starts = {(p.chrom, p.window_start) for r in payload["rearrangements"] for at in r.placements for p in at.partners}
    windows = plan.windows(WINDOW)
    assert all(any(lo <= start and start + WINDOW <= hi for lo, hi in windows[chrom]) for chrom, start in starts)
    values = run_unit(adapter, genome, tracks, spec.perturbations[0], "chr1", payload).values
    assert set(values) == set(layout.scores)
    # one placement alone is the plain screen; a shifted reverse-strand one is the hand computation
    plain = spec_of(
        {
            "kind": "rearrangement",
            "scores": scores,
            "insulation_window": 3,
            "rearrangements": [TRANSLOCATION, WITH_INSERTION],
        }
    )
    plain_plan = plan_screen(plain, [], SIZES, adapter.geometry, genome)
    single = run_unit(
        adapter, genome, tracks, plain.perturbations[0], "chr1", plain_plan.payload(plain_plan.units[0])
    ).values
    for name, value in single.items():
        assert values[name.replace("_p", "_at+0_p")] == pytest.approx(value, rel=1e-5, abs=1e-9)
    for row, placed in enumerate(payload["rearrangements"]):
        # insulation is read at the junctions' midpoint: 64 bp (2 bins) left of the shifted window's centre
        expected = _direct_scores(adapter, genome, tracks, placed.at(64), scores, reverse=True, position=6)
        for name, value in expected.items():
            assert values[name.replace("_p", "_at+64_rc_p")][row] == pytest.approx(value, rel=1e-4, abs=1e-9), name
    # the stored score is the mean over the six placements, per partner
    for name in (f"{s}_p{k}" for s in scores for k in (0, 1)):
        kept = np.stack(
            [values[n] for n in layout.scores if n.startswith(name.split("_p")[0] + "_at") and n.endswith(name[-3:])]
        )
        assert kept.shape[0] == 6
        assert np.allclose(values[name], kept.mean(axis=0), rtol=1e-5)


# --- keep_maps ------------------------------------------------------------------------------------------


def test_keep_maps_keeps_the_rearranged_map_minus_each_partners_reference(toy, one_thread):
    adapter, genome, tracks = toy
    spec = spec_of(
        {
            "kind": "rearrangement",
            "scores": ["mse_aligned"],
            "keep_maps": 1,
            "rearrangements": [TRANSLOCATION, WITH_INSERTION],
        }
    )
    plan = plan_screen(spec, [], SIZES, adapter.geometry, genome)
    [layout] = plan.layouts
    assert layout.top_maps == (1, 16)
    payload = plan.payload(plan.units[0])
    result = run_unit(adapter, genome, tracks, spec.perturbations[0], "chr1", payload)
    strongest = np.nanmax(np.stack([result.values["mse_aligned_p0"], result.values["mse_aligned_p1"]]), axis=0)
    [kept] = result.top_index.tolist()
    assert kept == int(np.argmax(strongest))
    placed = payload["rearrangements"][kept]
    maps = _direct_maps(adapter, genome, tracks, placed)
    [delta] = result.top_delta
    expected = np.full((16, 16), np.nan)
    for k, partner in enumerate(placed.partners):
        index = pieces_index(partner.pieces, 32, 16)
        ref_bins = np.flatnonzero(index >= 0)
        rows = index[ref_bins]
        expected[np.ix_(rows, rows)] = maps[0][np.ix_(rows, rows)] - maps[k + 1][np.ix_(ref_bins, ref_bins)]
    assert np.array_equal(np.isnan(delta), np.isnan(expected))
    assert np.allclose(delta[~np.isnan(delta)], expected[~np.isnan(expected)], rtol=1e-4, atol=1e-6)
    assert np.isnan(delta[:8, 8:]).all()  # contacts joining the two partners have no reference

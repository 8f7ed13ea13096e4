import numpy as np
import pytest

from screening.models.base import WindowGeometry
from screening.plan import deletion_starts, plan_screen
from screening.core.regions import Region, RegionError
from screening.spec import parse_spec

GEOMETRY = WindowGeometry(window_length=2_097_152, bin_size=8192, n_bins=256)
SIZES = {"chr1": 3_000_000, "chr2": 2_500_000}


def spec(**changes):
    raw = {
        "model": {"random_seed": 0},
        "genome": {"fasta": "/g.fa"},
        "regions": ["chr1:1,400,000-1,404,000"],
        "perturbations": [{"kind": "deletion", "width": 1000, "step": 1000}],
        "execution": {"chunk_size": 3},
        "output": {"store": "/x.zarr"},
    }
    raw.update(changes)
    return parse_spec(raw)


def test_deletion_starts_follow_corigami_range():
    # range((end - start) / step): the end is exclusive
    assert deletion_starts([Region("chr1", 1_400_000, 1_404_000)], 1000).tolist() == [1_400_000, 1_401_000, 1_402_000, 1_403_000]
    assert deletion_starts([Region("chr1", 0, 2_999)], 1000).tolist() == [0, 1000]


def test_deletion_starts_merge_overlapping_regions():
    starts = deletion_starts([Region("chr1", 0, 5000), Region("chr1", 3000, 7000)], 1000)
    assert starts.tolist() == list(range(0, 7000, 1000))


def test_plan_units_align_to_chunks():
    plan = plan_screen(spec(), [Region("chr1", 1_400_000, 1_404_000)], SIZES, GEOMETRY)
    (layout,) = plan.layouts
    assert layout.n == 4 and layout.chunk_size == 3
    assert [(u.chunk, u.lo, u.hi) for u in plan.units] == [(0, 0, 3), (1, 3, 4)]
    assert layout.window_start[0] == 351_924
    np.testing.assert_array_equal(layout.end - layout.start, 1000)


def test_plan_groups_per_chromosome_and_analysis():
    s = spec(perturbations=[{"kind": "deletion", "width": 1000, "step": 1000},
                            {"kind": "deletion", "width": 5000, "step": 5000}])
    regions = [Region("chr2", 1_200_000, 1_220_000), Region("chr1", 1_400_000, 1_410_000)]
    plan = plan_screen(s, regions, SIZES, GEOMETRY)
    assert [(lay.chrom, lay.analysis, lay.n) for lay in plan.layouts] == [
        ("chr1", "deletion_1000bp", 10), ("chr1", "deletion_5000bp", 2),
        ("chr2", "deletion_1000bp", 20), ("chr2", "deletion_5000bp", 4)]
    assert plan.n_perturbations == 36


def test_window_leaving_chromosome_is_refused_with_the_range():
    with pytest.raises(RegionError, match=r"deletion chr1:100,000-101,000 needs the model window .* can start from 1,048,076 to 1,949,924"):
        plan_screen(spec(), [Region("chr1", 100_000, 110_000)], SIZES, GEOMETRY)
    with pytest.raises(RegionError, match="leaves chr1"):
        plan_screen(spec(), [Region("chr1", 1_949_000, 1_951_000)], SIZES, GEOMETRY)
    plan_screen(spec(), [Region("chr1", 1_048_076, 1_048_076 + 1000)], SIZES, GEOMETRY)  # the edges are fine
    plan_screen(spec(), [Region("chr1", 1_949_924, 1_949_924 + 1000)], SIZES, GEOMETRY)


def test_region_shorter_than_step():
    with pytest.raises(RegionError, match="no perturbations"):
        plan_screen(spec(), [Region("chr1", 1_400_000, 1_400_500)], SIZES, GEOMETRY)


def test_invalid_policy_skip_drops_and_reports():
    plan = plan_screen(spec(invalid_policy="skip"), [Region("chr1", 1_046_000, 1_052_000)], SIZES, GEOMETRY)
    (layout,) = plan.layouts
    assert layout.start.tolist() == [1_049_000, 1_050_000, 1_051_000]
    assert plan.skipped["deletion_1000bp"]["count"] == 3
    assert plan.skipped["deletion_1000bp"]["items"][0].startswith("chr1:1046000-1047000")


def test_perturbation_with_its_own_regions():
    s = spec(perturbations=[{"kind": "deletion", "width": 1000, "step": 1000},
                            {"kind": "mutagenesis", "name": "ism", "regions": ["chr2:1,200,000-1,200,010"]}])
    plan = plan_screen(s, [Region("chr1", 1_400_000, 1_404_000)], SIZES, GEOMETRY)
    assert [(lay.chrom, lay.analysis, lay.n) for lay in plan.layouts] == [("chr1", "deletion_1000bp", 4), ("chr2", "ism", 10)]
    assert plan.layout("chr2", "ism").extra_dims == {"base": 4}
    with pytest.raises(RegionError, match=r"perturbations\[1\].regions.*chr9"):
        plan_screen(spec(perturbations=[{"kind": "deletion", "width": 1000, "step": 1000},
                                        {"kind": "mutagenesis", "regions": ["chr9:1-2"]}]),
                    [Region("chr1", 1_400_000, 1_404_000)], SIZES, GEOMETRY)


# --- window: shared (one reference window per work unit) --------------------------------------------

def shared_spec(kind="deletion", chunk_size=16, **changes):
    raw = {"kind": kind, "step": 1000, "window": "shared"}
    if kind != "insertion":
        raw["width"] = 1000
    else:
        raw["sequence"] = "ACGT"
    return spec(perturbations=[raw], execution={"chunk_size": chunk_size}, **changes)


@pytest.mark.parametrize("kind", ["deletion", "mask", "inversion", "duplication", "shuffle", "insertion"])
def test_shared_windows_one_per_unit_holding_every_perturbation_centrally(kind):
    plan = plan_screen(shared_spec(kind), [Region("chr1", 1_400_000, 1_448_000)], SIZES, GEOMETRY)
    (layout,) = plan.layouts
    assert layout.params["window"] == "shared"  # recorded in the store's params
    margin = GEOMETRY.window_length // 4
    for unit in plan.units:
        windows = layout.window_start[unit.lo : unit.hi]
        assert len(np.unique(windows)) == 1
        assert (layout.start[unit.lo : unit.hi] >= windows + margin).all()
        assert (layout.end[unit.lo : unit.hi] <= windows + GEOMETRY.window_length - margin).all()
    # centred on the first unit's span [start of the first, end of the last)
    assert layout.window_start[0] == (1_400_000 + int(layout.end[15]) - GEOMETRY.window_length) // 2


def test_centred_is_the_default_and_keeps_the_science_hash():
    centred = spec()
    assert centred.perturbations[0].window == "centred"
    explicit = spec(perturbations=[{"kind": "deletion", "width": 1000, "step": 1000, "window": "centred"}])
    assert explicit.science_hash() == centred.science_hash()
    assert shared_spec(chunk_size=3).science_hash() != centred.science_hash()
    plan = plan_screen(centred, [Region("chr1", 1_400_000, 1_404_000)], SIZES, GEOMETRY)
    assert len(np.unique(plan.layouts[0].window_start)) == 4  # one window per deletion


def test_shared_windows_never_leave_the_chromosome():
    # near both ends: centred windows would leave chr1, shared ones are moved inside
    window = GEOMETRY.window_length
    regions = [Region("chr1", 540_000, 560_000), Region("chr1", 2_440_000, 2_450_000)]
    plan = plan_screen(shared_spec(), regions, SIZES, GEOMETRY)
    (layout,) = plan.layouts
    assert layout.n == 30 and not plan.skipped
    assert (layout.window_start >= 0).all()
    assert (layout.window_start + window + 1000 <= SIZES["chr1"]).all()  # the loaded span too
    assert layout.window_start[0] == 0 and layout.window_start[-1] == SIZES["chr1"] - window - 1000
    with pytest.raises(RegionError):  # the centred screen cannot do these
        plan_screen(spec(), regions, SIZES, GEOMETRY)


def test_shared_windows_near_the_end_fall_back_and_are_skipped_or_refused():
    margin = GEOMETRY.window_length // 4
    regions = [Region("chr1", 500_000, 530_000)]  # the first deletions lie within a quarter window of the start
    with pytest.raises(RegionError, match=r"with window: shared, perturbations can lie within 524,288-"):
        plan_screen(shared_spec(), regions, SIZES, GEOMETRY)
    plan = plan_screen(shared_spec(invalid_policy="skip"), regions, SIZES, GEOMETRY)
    (layout,) = plan.layouts
    assert layout.start[0] == 525_000 and plan.skipped["deletion_1000bp"]["count"] == 25
    for unit in plan.units:  # units re-formed after skipping still share one window each
        assert len(np.unique(layout.window_start[unit.lo : unit.hi])) == 1
    assert (layout.start >= layout.window_start + margin).all()


def test_shared_windows_split_a_unit_wider_than_half_a_window():
    # 1,000 deletions 2 kb apart in one unit span 2 Mb: groups of at most half a window each
    s = spec(perturbations=[{"kind": "deletion", "width": 1000, "step": 2000, "window": "shared"}],
             execution={"chunk_size": 1000})
    sizes = {"chr3": 6_000_000}
    plan = plan_screen(s, [Region("chr3", 1_000_000, 3_000_000)], sizes, GEOMETRY)
    (layout,) = plan.layouts
    margin, window = GEOMETRY.window_length // 4, GEOMETRY.window_length
    assert len(np.unique(layout.window_start)) == 2  # 2 Mb of deletions in two groups of ≤ 1 Mb
    inside = (layout.start >= layout.window_start + margin) & (layout.end <= layout.window_start + window - margin)
    assert inside.all()


def test_shared_window_is_refused_for_other_kinds():
    from screening.spec import SpecError

    with pytest.raises(SpecError, match="window"):
        spec(perturbations=[{"kind": "mutagenesis", "window": "shared"}])
    with pytest.raises(SpecError, match="window"):
        spec(perturbations=[{"kind": "deletion", "width": 1000, "step": 1000, "window": "middle"}])


# --- perturbations whose edit cannot be made in their model window are refused up front -------------

SMALL = WindowGeometry(window_length=512, bin_size=32, n_bins=16)


def _sv_vcf(tmp_path, *records: tuple[str, int]) -> str:
    """A VCF of symbolic SVs ``(kind, length)`` at chr1:5,001."""
    lines = [f"chr1\t5001\tsv{i}\tA\t<{kind}>\t.\t.\tEND={5001 + length}" for i, (kind, length) in enumerate(records)]
    path = tmp_path / "sv.vcf"
    path.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "\n".join(lines) + "\n")
    return str(path)


def test_variant_longer_than_the_window_is_refused_naming_it(tmp_path):
    vcf = _sv_vcf(tmp_path, ("DUP", 512), ("DEL", 513), ("DUP", 513), ("INV", 600))
    with pytest.raises(Exception, match=r"2 variant\(s\) of perturbations.0 cannot be placed") as refused:
        plan_screen(spec(regions=[], perturbations=[{"kind": "variants", "vcf": vcf}]), [], {"chr1": 20_000}, SMALL)
    message = str(refused.value)
    assert "sv.vcf:5 sv2 chr1:5001 <DUP> changes 513 bp, more than the model window (512 bp) holds" in message
    assert "sv3 chr1:5001 <INV> changes 600 bp" in message
    assert "sv0" not in message and "sv1" not in message  # a 512 bp DUP fits; a deletion pulls in its own extra bp


def test_variant_longer_than_the_window_is_skipped_and_listed(tmp_path):
    vcf = _sv_vcf(tmp_path, ("DUP", 512), ("DUP", 100_000))
    raw = spec(regions=[], perturbations=[{"kind": "variants", "vcf": vcf}], invalid_policy="skip")
    plan = plan_screen(raw, [], {"chr1": 200_000}, SMALL)
    assert plan.n_perturbations == 1
    assert plan.skipped["variants"]["count"] == 1
    assert plan.skipped["variants"]["items"] == ["line 4 sv1: <DUP> changes 100,000 bp, more than the model window (512 bp) holds"]


@pytest.mark.parametrize("kind, width", [("inversion", 513), ("duplication", 600), ("deletion", 514), ("mask", 1_000)])
def test_tiled_width_longer_than_the_window_is_refused(kind, width):
    raw = spec(regions=["chr1:5,000-7,000"], perturbations=[{"kind": kind, "width": width, "step": width}])
    with pytest.raises(RegionError, match=rf"perturbations.0.width: {width:,} bp {kind}s do not fit in the model window of 512 bp"):
        plan_screen(raw, raw.parsed_regions(), {"chr1": 20_000}, SMALL)


def test_plan_windows_merge_per_chromosome():
    raw = spec(regions=["chr1:5,000-5,100", "chr1:9,000-9,020"], perturbations=[{"kind": "inversion", "width": 20, "step": 20}])
    plan = plan_screen(raw, raw.parsed_regions(), {"chr1": 20_000}, SMALL)
    windows = plan.windows(512)
    starts = sorted(int(s) for s in plan.layouts[0].window_start)
    assert windows == {"chr1": [(starts[0], starts[4] + 512), (starts[5], starts[5] + 512)]}

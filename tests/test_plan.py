import numpy as np
import pytest

from screening.models.base import WindowGeometry
from screening.plan import deletion_starts, plan_screen
from screening.regions import Region, RegionError
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
    assert [(l.chrom, l.analysis, l.n) for l in plan.layouts] == [
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
    assert [(l.chrom, l.analysis, l.n) for l in plan.layouts] == [("chr1", "deletion_1000bp", 4), ("chr2", "ism", 10)]
    assert plan.layout("chr2", "ism").extra_dims == {"base": 4}
    with pytest.raises(RegionError, match=r"perturbations\[1\].regions.*chr9"):
        plan_screen(spec(perturbations=[{"kind": "deletion", "width": 1000, "step": 1000},
                                        {"kind": "mutagenesis", "regions": ["chr9:1-2"]}]),
                    [Region("chr1", 1_400_000, 1_404_000)], SIZES, GEOMETRY)

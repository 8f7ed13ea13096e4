import numpy as np
import pytest

from screening.cli import main
from screening.interpret.evaluate import EvaluationError, auroc, average_precision, evaluate, read_truth_bed
from screening.store.reader import open_results
from screening.store.writer import create_store

from helpers import group_layout


def test_auroc_by_hand():
    assert auroc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert auroc([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == 0.5  # ties count half
    assert auroc([0.9, 0.3, 0.5], [1, 0, 1]) == 1.0
    assert np.isnan(auroc([0.1, 0.2], [0, 0]))


def test_average_precision_by_hand():
    # ranking: pos, neg, pos -> precision at the hits 1/1 and 2/3
    assert average_precision([0.9, 0.5, 0.4], [1, 0, 1]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    # tied scores are one threshold: all tied gives the positive fraction (the old pessimistic ranking gave 0.417)
    assert average_precision([0.5, 0.5], [1, 0]) == 0.5
    assert average_precision([1.0] * 6, [1, 0, 0, 1, 0, 1]) == 0.5
    # a tie within the ranking: threshold 0.9 gives P=1, R=1/3; threshold 0.5 (pos, neg tied) P=2/3, R=2/3; 0.1 P=3/5
    assert average_precision([0.9, 0.5, 0.5, 0.1, 0.1], [1, 1, 0, 0, 1]) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert np.isnan(average_precision([0.1, 0.2], [0, 0]))


def _sklearn_formula(scores, labels) -> float:
    """scikit-learn's average_precision_score written out: sum over distinct thresholds of ΔR · P."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    total = 0.0
    recall_before = 0.0
    for threshold in np.unique(scores)[::-1]:
        chosen = scores >= threshold
        precision = labels[chosen].sum() / chosen.sum()
        recall = labels[chosen].sum() / labels.sum()
        total += (recall - recall_before) * precision
        recall_before = recall
    return total


@pytest.mark.parametrize("seed", range(20))
def test_average_precision_equals_scikit_learn_on_random_and_tied_scores(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 80))
    labels = rng.random(n) < rng.uniform(0.1, 0.6)
    labels[rng.integers(n)] = True
    tied = rng.integers(0, 4, n).astype(float)  # heavy ties
    continuous = rng.normal(size=n)
    for scores in (tied, continuous, np.ones(n)):
        assert average_precision(scores, labels) == pytest.approx(_sklearn_formula(scores, labels), abs=1e-12)
    sklearn = pytest.importorskip("sklearn.metrics")
    for scores in (tied, continuous, np.ones(n)):
        assert average_precision(scores, labels) == pytest.approx(
            sklearn.average_precision_score(labels, scores), abs=1e-12
        )


def test_information_content_and_low_information_positions():
    from screening.interpret.evaluate import TruthElement, information_content, low_information_positions
    from screening.perturb.motif import load_ctcf

    probs = np.array([[1, 0.25], [0, 0.25], [0, 0.25], [0, 0.25]])
    assert information_content(probs) == pytest.approx([2.0, 0.0])
    motif = load_ctcf()
    ic = information_content(motif.probabilities(0.0))
    low = np.flatnonzero(ic < 1.0)
    assert 0 < len(low) < motif.width
    plus, minus = TruthElement("c", 100, 119, "ctcf_site", "+"), TruthElement("c", 200, 219, "ctcf_site", "-")
    decoy = TruthElement("c", 300, 319, "decoy_peak", ".")
    out = low_information_positions([plus, minus, decoy], 1.0, motif)
    assert {p for c, p in out if p < 150} == {100 + int(i) for i in low}
    assert {p for c, p in out if 150 <= p < 250} == {218 - int(i) for i in low}  # '-' reads the columns reversed
    assert not {p for c, p in out if p >= 300}


@pytest.fixture()
def store(tmp_path):
    starts = np.arange(0, 10_000, 1_000, dtype=np.int64)
    layout = group_layout(starts, ["good", "bad"], 4, 20_000, width=1_000, window_start=starts)
    path = tmp_path / "s.zarr"
    writer = create_store(path, {"name": "t"}, "h", {}, [layout])
    good = np.where((starts == 2_000) | (starts == 7_000), 1.0, 0.1).astype(np.float32)
    bad = np.where(starts == 4_000, 1.0, 0.1).astype(np.float32)
    for k in range(layout.n_chunks):
        sl = layout.chunk_slice(k)
        writer.write_chunk("chr1", "del", k, {"good": good[sl], "bad": bad[sl]})
    truth = tmp_path / "truth.bed"
    truth.write_text(
        "#chrom\tstart\tend\tname\tscore\tstrand\trole\tstrength\n"
        "chr1\t2100\t2119\ts1\t1\t+\tctcf_site\t1\n"
        "chr1\t7500\t7519\ts2\t1\t-\tctcf_site\t1\n"
        "chr1\t4200\t4219\td1\t1\t.\tdecoy_peak\t1\n"
    )
    return path, truth


def test_evaluate_store(store):
    path, truth = store
    metrics, by_role = evaluate(open_results(path), read_truth_bed(truth))
    row = metrics.set_index("score")
    assert row.loc["good", "auroc"] == 1.0 and row.loc["good", "aupr"] == 1.0
    assert row.loc["bad", "auroc"] < 0.5
    assert row.loc["good", "n_positive"] == 2 and row.loc["good", "aupr_random"] == pytest.approx(0.2)
    decoy = by_role[(by_role["score"] == "bad") & (by_role["role"] == "decoy_peak")]
    assert decoy["mean"].iloc[0] == pytest.approx(1.0)


def test_plain_bed_counts_every_element_positive(store, tmp_path):
    path, _ = store
    bed = tmp_path / "plain.bed"
    bed.write_text("chr1\t2100\t2119\nchr1\t7500\t7519\n")
    metrics, _ = evaluate(open_results(path), read_truth_bed(bed))
    assert metrics.set_index("score").loc["good", "auroc"] == 1.0


def test_cli_evaluate_writes_picture(store, tmp_path, capsys):
    path, truth = store
    assert main(["evaluate", str(path), str(truth), "--out", str(tmp_path / "e.png")]) == 0
    assert "auroc" in capsys.readouterr().out
    assert (tmp_path / "e.png").stat().st_size > 5_000
    # the information-content filter applies to per-base analyses only: a deletion screen keeps every row
    assert main(["evaluate", str(path), str(truth), "--out", str(tmp_path / "f.png"), "--min-information", "1"]) == 0
    assert "n_excluded" in capsys.readouterr().out


def test_truth_on_other_chromosomes_is_refused(store, tmp_path, capsys):
    path, _ = store
    bed = tmp_path / "other.bed"
    bed.write_text("chrX\t1\t10\n2\t5\t8\n")
    assert main(["evaluate", str(path), str(bed), "--out", str(tmp_path / "e.png")]) == 2
    assert "none of the truth chromosomes (2, chrX)" in capsys.readouterr().err
    assert not (tmp_path / "e.png").exists()


def test_bad_truth_files(store, tmp_path):
    path, truth = store
    with pytest.raises(EvaluationError, match="does not exist"):
        read_truth_bed(tmp_path / "missing.bed")
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\tx\t10\n")
    with pytest.raises(EvaluationError, match="bad.bed:1"):
        read_truth_bed(bad)
    with pytest.raises(EvaluationError, match="role 'enhancer'"):
        evaluate(open_results(path), read_truth_bed(truth), positive_role="enhancer")


def test_mutagenesis_is_evaluated_per_position(tmp_path):
    positions = np.arange(100, 140, dtype=np.int64)
    layout = group_layout(positions, ["impact_mean_abs"], 16, 1_000, analysis="ism", kind="mutagenesis",
                          extra_dims={"base": 4})
    store = create_store(tmp_path / "m.zarr", {"name": "m"}, "h", {}, [layout])
    values = np.full((40, 4), 0.1, np.float32)
    values[10:29, 2] = 1.0  # the motif's bases respond to one alternative
    values[:, 0] = np.nan  # the reference base
    for k in range(layout.n_chunks):
        sl = layout.chunk_slice(k)
        store.write_chunk("chr1", "ism", k, {"impact_mean_abs": values[sl]})
    truth = tmp_path / "t.bed"
    truth.write_text("chr1\t110\t129\tsite\t0\t+\tctcf_site\t1\n")
    metrics, _ = evaluate(open_results(tmp_path / "m.zarr"), read_truth_bed(truth))
    assert metrics.iloc[0]["n"] == 40 and metrics.iloc[0]["n_positive"] == 19 and metrics.iloc[0]["auroc"] == 1.0


def test_store_without_computed_scores_is_refused(tmp_path, capsys):
    starts = np.arange(0, 4_000, 1_000, dtype=np.int64)
    layout = group_layout(starts, ["impact_mean_abs"], 4, 20_000, width=1_000, window_start=starts)
    create_store(tmp_path / "empty.zarr", {"name": "t"}, "h", {}, [layout])  # nothing computed yet
    truth = tmp_path / "t.bed"
    truth.write_text("chr1\t100\t120\n")
    assert main(["evaluate", str(tmp_path / "empty.zarr"), str(truth), "--out", str(tmp_path / "e.png")]) == 2
    assert "no computed scores" in capsys.readouterr().err
    assert not (tmp_path / "e.png").exists()


def test_per_base_evaluation_can_leave_out_low_information_positions(tmp_path):
    from screening.interpret.evaluate import information_content
    from screening.perturb.motif import load_ctcf

    motif = load_ctcf()
    low = set(np.flatnonzero(information_content(motif.probabilities(0.0)) < 1.0).tolist())
    positions = np.arange(1000, 1060, dtype=np.int64)
    layout = group_layout(positions, ["s"], 60, 5_000, analysis="ism", kind="mutagenesis", extra_dims={"base": 4})
    path = tmp_path / "ism.zarr"
    writer = create_store(path, {"name": "t"}, "h", {}, [layout])
    motif_bases = (positions >= 1020) & (positions < 1039)
    # informative motif bases score high, uninformative ones like the background: only they hurt the ranking
    informative = motif_bases & ~np.isin(positions - 1020, list(low))
    values = np.where(informative, 1.0, 0.1)[:, None] * np.ones((1, 4))
    writer.write_chunk("chr1", "ism", 0, {"s": values.astype(np.float32)})
    truth = tmp_path / "truth.bed"
    truth.write_text("chr1\t1020\t1039\ts1\t1\t+\tctcf_site\t1\n")
    plain, _ = evaluate(open_results(path), read_truth_bed(truth))
    filtered, _ = evaluate(open_results(path), read_truth_bed(truth), min_information=1.0)
    assert plain["auroc"].iloc[0] < 1.0 and np.isnan(plain["min_information"].iloc[0])
    assert filtered["auroc"].iloc[0] == 1.0
    assert filtered["n_excluded"].iloc[0] == len(low) and filtered["min_information"].iloc[0] == 1.0
    assert filtered["n"].iloc[0] == plain["n"].iloc[0] - len(low)

"""Motif annotation of screen hits (screening.interpret.motifs.annotate, `screening hits/query --motifs`): a planted
CTCF motif is found in a toy hit on the right strand and none in a shuffled one; bad inputs exit 2 naming the problem."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from screening.cli import main
from screening.interpret.motifs import JasparDatabase, MotifError, load_jaspar
from screening.interpret.motifs.annotate import annotate_hits, select_motifs, summarise_annotations
from screening.interpret.motifs.hits_io import hits_bed, hits_long
from screening.perturb.edits import dinucleotide_shuffle
from screening.perturb.motif import load_ctcf
from helpers import group_layout
from screening.store.writer import create_store

LENGTH = 20_000
PLUS, MINUS, SHUFFLED = 3_000, 9_000, 15_000  # where the toy hits' motifs are planted (and shuffled away)


def _ctcf_ppm() -> np.ndarray:
    ctcf = load_ctcf()
    return ctcf.counts / ctcf.counts.sum(axis=0, keepdims=True)


class ToyGenome:
    """Base codes of one chromosome, read as :class:`screening.io.genome.Genome` reads them."""

    def __init__(self, codes: np.ndarray) -> None:
        self.codes = codes

    def chrom_size(self, chrom: str) -> int:
        if chrom != "chr1":
            raise ValueError(f"unknown chromosome {chrom!r}")
        return len(self.codes)

    def fetch(self, chrom: str, start: int, end: int) -> np.ndarray:
        return self.codes[start:end].copy()


@pytest.fixture(scope="module")
def genome() -> ToyGenome:
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 4, LENGTH).astype(np.uint8)
    consensus = _ctcf_ppm().argmax(axis=0).astype(np.uint8)
    codes[PLUS : PLUS + len(consensus)] = consensus
    codes[MINUS : MINUS + len(consensus)] = (3 - consensus)[::-1]  # the reverse complement
    planted = codes[SHUFFLED - 100 : SHUFFLED + 100].copy()
    planted[100 : 100 + len(consensus)] = consensus
    codes[SHUFFLED - 100 : SHUFFLED + 100] = dinucleotide_shuffle(planted, np.random.default_rng(0))
    return ToyGenome(codes)


@pytest.fixture(scope="module")
def ctcf_only() -> JasparDatabase:
    return JasparDatabase("toy", "CORE", None, ["MA0139.1"], ["CTCF"], [_ctcf_ppm()])


def _hits() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "analysis": "del",
            "chrom": "chr1",
            "start": [PLUS - 500, MINUS - 500, SHUFFLED - 100, PLUS + 5],
            "end": [PLUS + 1_500, MINUS + 1_500, SHUFFLED + 100, PLUS + 6],
            "score": [3.0, 2.0, 1.0, 0.5],
        }
    )


def test_planted_ctcf_is_found_on_its_strand_and_not_in_a_shuffled_hit(genome, ctcf_only):
    table = annotate_hits(_hits(), genome, ctcf_only, p_value=1e-5)
    by_hit = {hit: rows for hit, rows in table.groupby("hit")}
    assert set(by_hit) == {0, 1, 3}  # none in the shuffled interval
    plus, minus, cut = by_hit[0].iloc[0], by_hit[1].iloc[0], by_hit[3].iloc[0]
    assert (plus.motif_id, plus.strand, plus.motif_start, plus.motif_end, plus.overlap) == (
        "MA0139.1",
        "+",
        PLUS,
        PLUS + 19,
        "inside",
    )
    assert (minus.strand, minus.motif_start, minus.motif_end) == ("-", MINUS, MINUS + 19)
    assert plus.p_value < 1e-8 and plus.score > 15
    assert (cut.overlap, cut.motif_start) == ("partial", PLUS)  # a 1-bp substitution inside the motif
    texts = summarise_annotations(table, 4)
    assert texts[0].startswith("CTCF MA0139.1 (+) p=") and texts[2] == ""


def test_whole_database_ranks_ctcf_first_and_reports_no_zero_p_values(genome):
    database = load_jaspar("CORE", "vertebrates", "JASPAR2022")
    table = annotate_hits(_hits().head(2), genome, database)
    assert (table["p_value"] > 0).all() and (table["p_value"] < 1e-4).all()
    assert table.groupby("hit").head(1)["motif_id"].tolist() == ["MA0139.1", "MA0139.1"]
    widths = table["motif_end"] - table["motif_start"]
    # memelite gives p = 0 at a motif's best score; a motif of <= 6 bp cannot reach 1e-4 (4**-6 > 1e-4)
    assert widths.min() > 6
    capped = annotate_hits(_hits().head(2), genome, database, max_per_hit=2)
    assert capped.groupby("hit").size().tolist() == [2, 2]


def test_select_motifs_and_bad_inputs(genome, ctcf_only):
    database = load_jaspar("CORE", "vertebrates", "JASPAR2024")
    chosen = select_motifs(database, ["ctcf", "MA0139"])
    assert "MA0139.2" in chosen.ids and set(chosen.names) == {"CTCF"}
    with pytest.raises(MotifError, match="motif 'NOPE1' is not in JASPAR"):
        select_motifs(database, ["NOPE1"])
    insertion = pd.DataFrame({"chrom": ["chr1"], "start": [100], "end": [100]})
    with pytest.raises(MotifError, match="covers no reference interval"):
        annotate_hits(insertion, genome, ctcf_only)
    with pytest.raises(MotifError, match="p-value threshold"):
        annotate_hits(_hits(), genome, ctcf_only, p_value=2.0)
    with pytest.raises(MotifError, match="lacks the column"):
        annotate_hits(pd.DataFrame({"chrom": ["chr1"]}), genome, ctcf_only)


def test_hits_files(genome, ctcf_only):
    hits = _hits()
    table = annotate_hits(hits, genome, ctcf_only, p_value=1e-5)
    long = hits_long(hits, table)
    assert long["rank"].tolist() == [1, 2, 3, 4] and long.loc[2, "motif_id"] != long.loc[2, "motif_id"]  # NaN: none
    assert long.loc[0, "motif_strand"] == "+" and long.loc[1, "motif_strand"] == "-"
    bed = hits_bed(hits, table).splitlines()
    assert bed[1].split("\t") == ["chr1", str(PLUS - 500), str(PLUS + 1_500), "del:CTCF(+)", "1000", "."]
    assert bed[3].split("\t")[3] == "del:none"


# -- the CLI, on a store whose spec names a FASTA


@pytest.fixture(scope="module")
def deletion_store(tmp_path_factory, genome):
    root = tmp_path_factory.mktemp("annotate")
    fasta = root / "toy.fa"
    letters = np.frombuffer(b"ACGT", np.uint8)[genome.codes].tobytes().decode()
    fasta.write_text(">chr1\n" + "\n".join(letters[i : i + 60] for i in range(0, LENGTH, 60)) + "\n")
    starts = np.arange(1_000, 17_000, 2_000, dtype=np.int64)
    deletion = group_layout(starts, ["impact_mean_abs"], 8, LENGTH, width=2_000)
    positions = np.arange(3_000, 3_040, dtype=np.int64)
    attribution = group_layout(positions, ["attribution"], 40, LENGTH, analysis="attr", kind="attribution",
                               extra_dims={"base": 4}, score_dims={"attribution": ["base"]})
    spec = {"name": "toy", "genome": {"fasta": str(fasta)}}
    store = create_store(root / "del.zarr", spec, "h", {}, [deletion, attribution])
    scores = np.linspace(1.0, 0.1, len(starts)).astype(np.float32)
    scores[1] = 5.0  # the deletion 3,000-5,000, which holds the planted + motif, is the top hit
    store.write_chunk("chr1", "del", 0, {"impact_mean_abs": scores})
    create_store(root / "attr.zarr", spec, "h", {}, [attribution])
    return root / "del.zarr", root / "attr.zarr"


def test_cli_hits_and_query_name_the_motifs(deletion_store, tmp_path, capsys):
    store, _ = deletion_store
    out = tmp_path / "top.tsv"
    assert (
        main(
            [
                "hits",
                str(store),
                "--top",
                "3",
                "--motifs",
                "--motif",
                "CTCF",
                "--jaspar-release",
                "JASPAR2022",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "CTCF MA0139.1 (+)" in printed and "inside" in printed
    table = pd.read_csv(out, sep="\t")
    first = table[table["rank"] == 1].iloc[0]
    assert (first["start"], first["motif_id"], first["motif_strand"], first["motif_start"]) == (
        3_000,
        "MA0139.1",
        "+",
        PLUS,
    )
    bed = tmp_path / "top.bed"
    assert main(["hits", str(store), "--analysis", "del", "--motifs", "--motif", "CTCF", "--output", str(bed)]) == 0
    assert "del:CTCF(+)" in bed.read_text()
    capsys.readouterr()
    assert (
        main(
            [
                "query",
                str(store),
                "chr1:8,500-9,500",
                "--analysis",
                "del",
                "--motifs",
                "--motif",
                "CTCF",
                "--format",
                "tsv",
            ]
        )
        == 0
    )
    assert "CTCF MA0139.2 (-)" in capsys.readouterr().out  # the planted reverse complement, JASPAR2024's revision


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["hits", "{del}", "--motifs", "--jaspar-collection", "NOPE", "--output", "{out}"],
            "unknown JASPAR collection 'NOPE'",
        ),
        (
            ["hits", "{del}", "--motifs", "--tax-group", "martians", "--output", "{out}"],
            "unknown JASPAR taxonomic group",
        ),
        (["hits", "{del}", "--motifs", "--motif", "NOPE1", "--output", "{out}"], "motif 'NOPE1' is not in JASPAR"),
        (
            ["hits", "{attr}", "--motifs", "--output", "{out}"],
            "no analysis whose perturbations cover reference intervals",
        ),
        (
            ["hits", "{del}", "--analysis", "attr", "--motifs", "--output", "{out}"],
            "'attr' (attribution) has no perturbations",
        ),
        (["hits", "{del}", "--motifs", "--output", "{bad}"], "give a .tsv"),
        (["query", "{del}", "chr1", "--analysis", "attr", "--motifs"], "'attr' (attribution) has no perturbations"),
        (["query", "{del}", "chr1", "--analysis", "del", "--motifs", "--motif-pvalue", "0"], "p-value threshold"),
        (
            ["query", "{del}", "chr1", "--analysis", "del", "--motifs", "--server", "http://x"],
            "cannot be used with --server",
        ),
    ],
)
def test_cli_errors_exit_2_and_write_nothing(deletion_store, tmp_path, capsys, argv, message):
    store, attr = deletion_store
    out, bad = tmp_path / "hits.tsv", tmp_path / "hits.txt"
    argv = [a.format(**{"del": store, "attr": attr, "out": out, "bad": bad}) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not bad.exists()


def test_top_hits_gain_a_motif_column(deletion_store, genome, ctcf_only):
    from screening.interpret.motifs.annotate import MotifAnnotator
    from screening.report.hits import top_hits
    from screening.store.reader import open_results

    results = open_results(deletion_store[0])
    table = top_hits(results, n=2, motifs=MotifAnnotator(genome, ctcf_only, p_value=1e-5))
    assert table["start"].tolist() == [3_000, 1_000]
    assert table["motifs"].tolist()[0].startswith("CTCF MA0139.1 (+) p=") and table["motifs"].tolist()[1] == ""
    assert "motifs" not in top_hits(results, n=2).columns

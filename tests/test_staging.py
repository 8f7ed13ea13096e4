"""Staging of remote genome and track inputs into the node cache (moto S3, http and file:// URLs)."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import numpy as np
import pytest

from helpers import toy_spec_dict
from moto_s3 import s3_server, s3fs_client
from screening.io import staging
from screening.io.genome import Genome, GenomeError
from screening.io.staging import StagingError, stage, staged_root
from screening.io.tracks import Track, TrackError
from screening.spec import parse_spec


@pytest.fixture(scope="module")
def s3(toy_paths):
    """moto S3 with the toy genome (FASTA without index) and tracks under s3://inputs/."""
    with s3_server(buckets=("inputs",)) as endpoint:
        fs = s3fs_client()
        for name in ("fasta", "ctcf", "atac"):
            fs.put_file(str(toy_paths[name]), f"inputs/{toy_paths[name].name}")
        yield endpoint


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCREENING_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def downloads(monkeypatch, tmp_path):
    """Log every download (to a file, so forked processes count too)."""
    log = tmp_path / "downloads.log"
    log.touch()
    original = staging._download

    def counted(fs, path, target, url, size):
        with open(log, "a") as handle:
            handle.write(url + "\n")
        return original(fs, path, target, url, size)

    monkeypatch.setattr(staging, "_download", counted)
    return lambda: log.read_text().splitlines()


def test_s3_genome_is_staged_with_an_index_built_locally(s3, toy_paths, cache, downloads):
    genome = Genome("s3://inputs/toy.fa")
    local = Genome(toy_paths["fasta"])
    assert genome.path.is_relative_to(staged_root()) and staged_root().is_relative_to(cache)
    assert genome.sha256() == local.sha256() and genome.chrom_sizes == local.chrom_sizes
    np.testing.assert_array_equal(genome.fetch("chr1", 100, 700), local.fetch("chr1", 100, 700))
    assert downloads() == ["s3://inputs/toy.fa"]  # no .fai remotely: built beside the staged copy
    assert (genome.path.parent / "toy.fa.fai").is_file()


def test_remote_fasta_index_is_fetched_when_present(s3, toy_paths, tmp_path, downloads):
    fs = s3fs_client()
    fs.put_file(str(toy_paths["fasta"]), "inputs/indexed/toy.fa")
    fs.pipe("inputs/indexed/toy.fa.fai", Path(str(toy_paths["fasta"]) + ".fai").read_bytes())
    genome = Genome("s3://inputs/indexed/toy.fa")
    assert downloads() == ["s3://inputs/indexed/toy.fa", "s3://inputs/indexed/toy.fa.fai"]
    assert (genome.path.parent / "toy.fa.fai").read_bytes() == fs.cat("inputs/indexed/toy.fa.fai")
    assert genome.chrom_sizes == {"chr1": 6_000, "chr2": 3_000}


def test_second_open_downloads_nothing(s3, downloads):
    first = Track("s3://inputs/ctcf.bw", "ctcf")
    mtime = first.path.stat().st_mtime_ns
    second = Track("s3://inputs/ctcf.bw", "ctcf")
    assert second.path == first.path and second.path.stat().st_mtime_ns == mtime
    assert downloads() == ["s3://inputs/ctcf.bw"]


def _stage_in_process(url: str) -> str:
    return str(stage(url))


def test_concurrent_workers_on_one_node_download_once(s3, downloads):
    """Four forked processes and four threads stage one object at once: one download."""
    url = "s3://inputs/atac.bw"
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(str(stage(url)))) for _ in range(4)]
    ctx = multiprocessing.get_context("fork")  # forked children keep the download counter
    with ctx.Pool(4) as pool:
        pending = pool.map_async(_stage_in_process, [url] * 4)
        for thread in threads:
            thread.start()
        results += pending.get(timeout=120)
        for thread in threads:
            thread.join()
    assert len(results) == 8 and len(set(results)) == 1
    assert downloads() == [url]
    assert not [p for p in Path(results[0]).parent.iterdir() if ".tmp" in p.name]


def test_changed_remote_object_is_downloaded_again(s3, toy_paths, downloads):
    fs = s3fs_client()
    fs.put_file(str(toy_paths["ctcf"]), "inputs/changing.bw")
    first = stage("s3://inputs/changing.bw")
    fs.put_file(str(toy_paths["atac"]), "inputs/changing.bw")  # new content, new ETag
    second = stage("s3://inputs/changing.bw")
    assert first != second and second.read_bytes() == toy_paths["atac"].read_bytes()
    assert first.read_bytes() == toy_paths["ctcf"].read_bytes()
    assert len(downloads()) == 2


@pytest.fixture
def http_server(toy_paths):
    """A plain HTTP server on loopback serving the toy inputs' folder."""
    import functools
    import http.server

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(toy_paths["fasta"].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_and_file_urls_are_staged(http_server, toy_paths, downloads):
    track = Track(f"{http_server}/ctcf.bw", "ctcf")
    assert track.sha256() == Track(toy_paths["ctcf"], "ctcf").sha256()
    genome = Genome(f"file://{toy_paths['fasta']}")
    assert genome.path != toy_paths["fasta"] and genome.sha256() == Genome(toy_paths["fasta"]).sha256()
    fasta = f"file://{toy_paths['fasta']}"  # its .fai lies beside it (built by the local Genome): fetched too
    assert downloads() == [f"{http_server}/ctcf.bw", fasta, fasta + ".fai"]


def test_missing_object_is_an_error_naming_the_url(s3):
    with pytest.raises(GenomeError, match=r"s3://inputs/missing.fa does not exist"):
        Genome("s3://inputs/missing.fa")
    with pytest.raises(TrackError, match=r"track 'ctcf': s3://inputs/missing.bw does not exist"):
        Track("s3://inputs/missing.bw", "ctcf")
    with pytest.raises(StagingError, match=r"s3://no-such-bucket/x.bw"):
        stage("s3://no-such-bucket/x.bw")
    assert not staged_root().exists() or not any(staged_root().rglob("*.bw"))


def test_screen_inputs_from_s3_record_the_url_and_checksum(s3, toy_paths, tmp_path):
    from screening.prepare import prepare_screen

    raw = toy_spec_dict(toy_paths, tmp_path / "x.zarr")
    raw["genome"]["fasta"] = "s3://inputs/toy.fa"
    for track in raw["tracks"]:
        track["path"] = f"s3://inputs/{track['name']}.bw"
    prepared = prepare_screen(parse_spec(raw))
    provenance = prepared.provenance
    assert provenance["genome"]["path"] == "s3://inputs/toy.fa"
    assert provenance["genome"]["sha256"] == Genome(toy_paths["fasta"]).sha256()
    assert [t["path"] for t in provenance["tracks"]] == ["s3://inputs/ctcf.bw", "s3://inputs/atac.bw"]
    assert provenance["tracks"][0]["sha256"] == Track(toy_paths["ctcf"], "ctcf").sha256()
    assert prepared.plan.n_perturbations == 30


def test_cli_validate_with_a_missing_remote_track_exits_2(s3, toy_paths, tmp_path, capsys):
    import yaml

    from screening.cli import main

    raw = toy_spec_dict(toy_paths, tmp_path / "x.zarr")
    raw["tracks"][1]["path"] = "s3://inputs/nope.bw"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    assert main(["validate", str(spec)]) == 2
    assert "s3://inputs/nope.bw does not exist" in capsys.readouterr().err

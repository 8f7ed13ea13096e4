"""Result stores on an object store: a real S3-compatible server (moto) on loopback.

A full small screen runs through the runner and Ray workers into ``s3://bucket/…``, is
queried back and compared with the same screen on local disk; resume, refusal of another
spec, leftovers of a dead build, and bad buckets/credentials are checked too.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import separate_ray, toy_spec_dict
from moto_s3 import s3_server, s3fs_client
from screening.cli import main as cli_main
from screening.store.reader import open_results
from workers.driver import run_screen
from screening.spec import parse_spec
from screening.store.writer import BUILDING_KEY, StoreError, StoreNotFoundError, read_store_attrs

SCORES = ("impact_mean_abs", "impact_abs_mean")


@pytest.fixture(scope="module")
def s3():
    with s3_server(buckets=("bucket",)) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def ray_cluster(s3):
    """A local Ray of the module's own, started after AWS_* point at moto so that its workers inherit them
    (the session Ray's workers were started without them)."""
    with separate_ray(num_cpus=1):
        yield


def spec_for(toy_paths, store, **changes):
    """The toy screen; its deletions keep 2 Δ maps a unit (map shards on S3 too) unless ``perturbations`` is given."""
    raw = toy_spec_dict(toy_paths, store, **changes)
    raw["execution"]["cpus_per_worker"] = 1
    if "perturbations" not in changes:
        raw["perturbations"][0]["keep_maps"] = 2
    return parse_spec(raw)


def assert_same_maps(remote, local, region: str = "chr1") -> None:
    got, want = remote.top_maps(region), local.top_maps(region)
    assert got.sizes["top"] == want.sizes["top"] > 0
    np.testing.assert_array_equal(got["start"].values, want["start"].values)
    np.testing.assert_array_equal(got.values, want.values)


def frame(results, region):
    return results.to_dataframe(region).reset_index(drop=True)


@pytest.fixture(scope="module")
def screens(toy_paths, tmp_path_factory, ray_cluster):
    """The same toy screen on local disk and on S3."""
    local = tmp_path_factory.mktemp("local") / "x.zarr"
    local_summary = run_screen(spec_for(toy_paths, local), progress=False)
    remote_summary = run_screen(spec_for(toy_paths, "s3://bucket/x.zarr"), progress=False)
    return local, local_summary, remote_summary


def test_screen_on_s3_is_queried_back_equal_to_local(screens):
    local, local_summary, remote_summary = screens
    assert remote_summary.n_computed == local_summary.n_computed == 30 and not remote_summary.resumed
    remote = open_results("s3://bucket/x.zarr")
    assert remote.is_complete and remote.progress == (8, 8)
    assert remote.provenance["model"]["checksum"] == open_results(local).provenance["model"]["checksum"]
    for region in ("chr1", "chr2", "chr1:2,100-2,190"):
        got, want = frame(remote, region), frame(open_results(local), region)
        assert len(got) == len(want) > 0
        np.testing.assert_array_equal(got[["start", "end"]].values, want[["start", "end"]].values)
        for score in SCORES:
            np.testing.assert_array_equal(got[score].values, want[score].values)  # same float32 bits
    assert_same_maps(remote, open_results(local))
    # every object is under the store's prefix: nothing was built elsewhere and left behind
    keys = s3fs_client().find("bucket")
    assert keys and all(key.startswith("bucket/x.zarr/") for key in keys)


def test_query_reads_only_overlapping_chunks(screens, monkeypatch):
    import s3fs

    fetched: list[str] = []
    original = s3fs.S3FileSystem._cat_file

    async def counting(self, path, *args, **kwargs):
        fetched.append((path, kwargs.get("start", args[1] if len(args) > 1 else None)))
        return await original(self, path, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_cat_file", counting)
    results = open_results("s3://bucket/x.zarr")
    # del20 on chr1:2,000-2,400 has 20 deletions in chunks of 4: 2,100-2,160 is chunk 1 (5..7), in the
    # group's one shard (format 3, one block of 5 units): at most two reads of it (shard index, chunk)
    ds = results.query("chr1:2,100-2,150")
    fetched.clear()
    ds["impact_mean_abs"].values  # noqa: B018  (load)
    score_reads = [(p.rsplit("/c/", 1)[1], start) for p, start in fetched if "/impact_mean_abs/c/" in p]
    assert {shard for shard, _ in score_reads} == {"0"} and 1 <= len(score_reads) <= 2
    assert not [p for p, _ in fetched if "/impact_abs_mean/" in p]


def test_resume_on_s3_recomputes_only_missing_units(toy_paths, screens):
    local, _, _ = screens
    import zarr

    from screening.store.location import Location

    flags = zarr.open_group(Location("s3://bucket/x.zarr").zarr_store(False), mode="r+")["chr1/del20/chunk_done"]
    for k in (1, 3):  # forget two units: their flags go to 0, so their chunks are redone
        flags[k] = 0
    results = open_results("s3://bucket/x.zarr")
    assert results.progress == (6, 8)
    summary = run_screen(spec_for(toy_paths, "s3://bucket/x.zarr"), progress=False)
    assert summary.resumed and summary.n_units == 2 and summary.n_computed == 8
    got, want = frame(open_results("s3://bucket/x.zarr"), "chr1"), frame(open_results(local), "chr1")
    np.testing.assert_array_equal(got["impact_mean_abs"].values, want["impact_mean_abs"].values)
    assert open_results("s3://bucket/x.zarr").progress == (8, 8)
    assert_same_maps(open_results("s3://bucket/x.zarr"), open_results(local))  # their map shard read back, rewritten


def test_other_spec_on_s3_is_refused_and_store_untouched(toy_paths, screens):
    fs = s3fs_client()
    before = {key: fs.info(key)["ETag"] for key in fs.find("bucket/x.zarr")}
    other = spec_for(toy_paths, "s3://bucket/x.zarr", perturbations=[{"kind": "deletion", "width": 40, "step": 40}])
    with pytest.raises(StoreError, match=r"s3://bucket/x.zarr belongs to another screen spec"):
        run_screen(other, progress=False)
    after = {key: fs.info(key)["ETag"] for key in s3fs_client().find("bucket/x.zarr")}
    assert after == before


def test_prefix_holding_something_else_is_refused(toy_paths, s3):
    s3fs_client().pipe("bucket/foreign.zarr/notes.txt", b"not a store")
    with pytest.raises(StoreError, match="s3://bucket/foreign.zarr exists and is not a screening result store"):
        run_screen(spec_for(toy_paths, "s3://bucket/foreign.zarr"), progress=False)
    assert s3fs_client().cat("bucket/foreign.zarr/notes.txt") == b"not a store"


def test_dead_build_is_invisible_to_readers_and_rebuilt(toy_paths, ray_cluster):
    from screening.prepare import prepare_screen
    from screening.store.writer import open_or_create_store

    fs = s3fs_client()
    # What a driver killed mid-build leaves: the building marker, some arrays, no screening attrs.
    fs.pipe("bucket/dead.zarr/zarr.json", b'{"zarr_format": 3, "node_type": "group", "attributes": {"%s": {}}}' % BUILDING_KEY.encode())
    fs.pipe("bucket/dead.zarr/chr1/zarr.json", b'{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    assert read_store_attrs("s3://bucket/dead.zarr") is None
    with pytest.raises(StoreError, match="s3://bucket/dead.zarr is not a screening result store"):
        open_results("s3://bucket/dead.zarr")
    spec = spec_for(toy_paths, "s3://bucket/dead.zarr")
    prepared = prepare_screen(spec)
    store, resumed = open_or_create_store(
        spec.output.store, spec.model_dump(mode="json"), spec.science_hash(), prepared.provenance, prepared.plan.layouts
    )
    assert not resumed and store.progress() == (0, 8)
    assert read_store_attrs("s3://bucket/dead.zarr")["spec_sha256"] == spec.science_hash()


def test_missing_bucket_is_a_clear_error_naming_the_url(toy_paths, s3, tmp_path, capsys):
    with pytest.raises(StoreError, match="s3://no-such-bucket/x.zarr"):
        run_screen(spec_for(toy_paths, "s3://no-such-bucket/x.zarr"), progress=False)
    with pytest.raises(StoreNotFoundError, match="s3://no-such-bucket/x.zarr"):
        open_results("s3://no-such-bucket/x.zarr")
    spec_path = tmp_path / "spec.yaml"
    import yaml

    spec_path.write_text(yaml.safe_dump(toy_spec_dict(toy_paths, "s3://no-such-bucket/x.zarr")))
    assert cli_main(["run", str(spec_path), "--no-progress", "--no-plots"]) == 2
    assert "screening: error: s3://no-such-bucket/x.zarr" in capsys.readouterr().err
    assert cli_main(["query", "s3://no-such-bucket/x.zarr", "chr1"]) == 2
    assert "s3://no-such-bucket/x.zarr" in capsys.readouterr().err


def test_bad_credentials_are_a_clear_error_naming_the_url(toy_paths, screens, monkeypatch, capsys):
    import moto.settings
    import s3fs

    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto now checks every key
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTAREALKEY00000")
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(StoreError, match=r"s3://bucket/x.zarr: cannot read the object store"):
        open_results("s3://bucket/x.zarr")
    assert cli_main(["info", "s3://bucket/x.zarr"]) == 2
    assert "screening: error: s3://bucket/x.zarr: cannot read the object store" in capsys.readouterr().err
    with pytest.raises(StoreError, match=r"s3://bucket/y.zarr"):
        run_screen(spec_for(toy_paths, "s3://bucket/y.zarr"), progress=False)
    s3fs.S3FileSystem.clear_instance_cache()


def test_storage_options_from_spec_reach_fsspec_and_secrets_are_redacted(toy_paths, s3, tmp_path):
    from screening.store.location import Location

    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3}}
    spec = spec_for(toy_paths, "s3://bucket/opts.zarr", output={"store": "s3://bucket/opts.zarr", "storage_options": options})
    assert Location(spec.output.store, spec.output.storage_options).storage_options == options
    from screening.prepare import prepare_screen
    from screening.store.writer import open_or_create_store

    prepared = prepare_screen(spec)
    open_or_create_store(spec.output.store, spec.model_dump(mode="json"), spec.science_hash(), prepared.provenance,
                         prepared.plan.layouts, storage_options=spec.output.storage_options)
    stored = read_store_attrs("s3://bucket/opts.zarr", options)["spec"]["output"]["storage_options"]
    assert stored == {"key": "***", "secret": "***", "client_kwargs": {"endpoint_url": s3}}


def test_overwrite_on_s3_replaces_the_old_store(toy_paths, s3):
    from screening.prepare import prepare_screen
    from screening.store.writer import open_or_create_store

    def create(spec, overwrite=False):
        prepared = prepare_screen(spec)
        return open_or_create_store(spec.output.store, spec.model_dump(mode="json"), spec.science_hash(),
                                    prepared.provenance, prepared.plan.layouts, overwrite=overwrite)

    first = spec_for(toy_paths, "s3://bucket/over.zarr")
    store, _ = create(first)
    store.write_chunk("chr1", "del20", 0, {s: np.ones(4, np.float32) for s in SCORES})
    assert store.progress() == (1, 8)
    second = spec_for(toy_paths, "s3://bucket/over.zarr", perturbations=[{"kind": "deletion", "width": 40, "step": 40}])
    with pytest.raises(StoreError, match="belongs to another screen spec"):
        create(second)
    replaced, resumed = create(second, overwrite=True)
    assert not resumed and replaced.progress() == (0, 5)
    assert read_store_attrs("s3://bucket/over.zarr")["spec_sha256"] == second.science_hash()
    assert not s3fs_client().find("bucket/over.zarr/chr1/del20")  # nothing of the old store is left


def test_cli_queries_an_s3_store(screens, capsys):
    assert cli_main(["query", "s3://bucket/x.zarr", "chr2", "--format", "tsv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split("\t")[:3] == ["chrom", "start", "end"] and len(lines) == 1 + 10
    assert cli_main(["info", "s3://bucket/x.zarr"]) == 0
    assert '"complete": true' in capsys.readouterr().out

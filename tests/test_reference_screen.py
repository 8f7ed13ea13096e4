"""The issue's acceptance run: 20 deletions of 1 kb over chr1:1,400,000-1,420,000 with the reference
C.Origami checkpoint, through `screening run` on an embedded local Ray, read back by query (slow: ~40
full-size forward passes)."""

import numpy as np
import pandas as pd
import pytest
import yaml

from screening import open_results
from screening.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.reference]


def test_reference_screen_end_to_end(shared_dir, tmp_path, capsys):
    import ray

    ray.shutdown()  # the session Ray, if another module started it: this run starts its own, as a user's does
    ref = shared_dir / "reference" / "corigami"
    spec = {
        "name": "corigami-reference",
        "model": {"kind": "corigami", "checkpoint": str(ref / "model.ckpt")},
        "genome": {"fasta": str(ref / "genome.fa")},
        "tracks": [
            {"name": "ctcf", "path": str(ref / "ctcf.bw"), "transform": "none"},
            {"name": "atac", "path": str(ref / "atac.bw"), "transform": "log1p"},
        ],
        "regions": ["chr1:1,400,000-1,420,000"],
        "perturbations": [{"kind": "deletion", "name": "deletion_1kb", "width": 1000, "step": 1000}],
        "execution": {"num_workers": 1, "cpus_per_worker": 2, "batch_size": 4, "chunk_size": 4},
        "output": {"store": str(tmp_path / "ref.zarr")},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["run", str(tmp_path / "spec.yaml"), "--no-progress"]) == 0
    ds = open_results(tmp_path / "ref.zarr").query("chr1:1,400,000-1,420,000").compute()
    assert ds.sizes["perturbation"] == 20
    expected = pd.read_csv(ref / "screen_expected.tsv", sep="\t")
    for name in ("impact_mean_abs", "impact_abs_mean"):
        np.testing.assert_allclose(ds[name].values[:4], expected[name].to_numpy(), rtol=1e-4)
    assert np.isfinite(ds["impact_mean_abs"].values).all()
    capsys.readouterr()
    assert main(["query", str(tmp_path / "ref.zarr"), "chr1:1,400,000-1,410,000", "--format", "tsv"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 11

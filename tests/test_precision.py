"""Inference precision: the spec field, CPU fallback to fp32, provenance, CUDA autocast (GPU only)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from helpers import TOY_CONFIG, toy_spec_dict
from screening.io.genome import Genome
from screening.io.tracks import Track, TrackSet
from screening.models.corigami import CorigamiAdapter, CorigamiConfig
from screening.models.precision import autocast, configure_adapter, effective_precision, worker_precision
from screening.spec import ExecutionSpec, SpecError, parse_spec

# bf16 keeps 8 significant bits (relative step 2**-8 = 0.4 %) and fp16 11 bits; through the toy
# model's few layers the maps stay within these fractions of their largest magnitude.
BF16_TOLERANCE = 0.05
FP16_TOLERANCE = 0.01


def test_precision_field_is_validated_and_defaults_to_fp32(toy_paths, tmp_path):
    assert ExecutionSpec().precision == "fp32"
    raw = toy_spec_dict(toy_paths, tmp_path / "x.zarr")
    raw["execution"]["precision"] = "fp64"
    with pytest.raises(SpecError, match=r"execution.precision: Input should be 'fp32', 'bf16' or 'fp16'"):
        parse_spec(raw)
    raw["execution"]["precision"] = "bf16"
    assert parse_spec(raw).execution.precision == "bf16"


def test_reduced_precision_is_part_of_the_spec_hash(toy_paths, tmp_path):
    raw = toy_spec_dict(toy_paths, tmp_path / "x.zarr")
    fp32 = parse_spec(raw).science_hash()
    raw["execution"]["precision"] = "fp32"
    raw["execution"]["batch_size"] = 7  # execution fields other than a reduced precision do not count
    assert parse_spec(raw).science_hash() == fp32
    raw["execution"]["precision"] = "bf16"
    bf16 = parse_spec(raw).science_hash()
    raw["execution"]["precision"] = "fp16"
    assert len({fp32, bf16, parse_spec(raw).science_hash()}) == 3


def test_cpu_falls_back_to_fp32_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="screening.models.precision"):
        assert effective_precision("bf16", "cpu") == "fp32"
    assert "execution.precision bf16 needs a CUDA device; running fp32 on cpu" in caplog.text
    assert effective_precision("fp16", "cuda") == "fp16"
    assert effective_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        effective_precision("int8", "cpu")


@pytest.mark.parametrize(
    ("device", "gpus", "used"),
    [("cpu", 0, "fp32"), ("cuda", 1, "bf16"), ("auto", 1, "bf16"), ("auto", 0, "fp32")],
)
def test_worker_precision_for_provenance(device, gpus, used):
    execution = ExecutionSpec(device=device, gpus_per_worker=gpus, precision="bf16")
    assert worker_precision(execution) == {"requested": "bf16", "used": used}


def test_provenance_records_the_precision(toy_paths, tmp_path):
    from screening.prepare import prepare_screen

    raw = toy_spec_dict(toy_paths, tmp_path / "x.zarr")
    raw["execution"]["precision"] = "fp16"
    prepared = prepare_screen(parse_spec(raw))
    assert prepared.provenance["precision"] == {"requested": "fp16", "used": "fp32"}  # device: cpu


@pytest.fixture(scope="module")
def toy_batch(toy_paths, one_thread):
    genome = Genome(toy_paths["fasta"])
    tracks = TrackSet([Track(toy_paths["ctcf"], "ctcf"), Track(toy_paths["atac"], "atac", "log1p")])
    starts = (100, 1300, 2900)
    codes = np.stack([genome.fetch("chr1", s, s + 512) for s in starts])
    values = np.stack([tracks.fetch("chr1", s, s + 512) for s in starts])
    return codes, values


def test_cpu_adapter_asked_for_bf16_predicts_exactly_fp32(toy_batch):
    adapter = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0)
    want = adapter.predict(*toy_batch)
    assert configure_adapter(adapter, "bf16") == "fp32" and adapter.precision == "fp32"
    got = adapter.predict(*toy_batch)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_autocast_is_a_no_op_off_cuda():
    with autocast(torch.device("cpu"), "bf16"):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.parametrize(("precision", "tolerance"), [("bf16", BF16_TOLERANCE), ("fp16", FP16_TOLERANCE)])
def test_cuda_reduced_precision_is_close_to_fp32(toy_batch, precision, tolerance):
    adapter = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0, device="cuda")
    assert configure_adapter(adapter, "fp32") == "fp32"
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    fp32 = adapter.predict(*toy_batch)
    assert configure_adapter(adapter, precision) == precision
    reduced = adapter.predict(*toy_batch)
    assert reduced.dtype == np.float32
    scale = np.abs(fp32).max()
    assert np.abs(reduced - fp32).max() <= tolerance * scale
    assert not np.array_equal(reduced, fp32)  # autocast really ran in reduced precision


@pytest.mark.gpu
def test_cuda_fp32_agrees_with_cpu_fp32(toy_batch):
    cpu = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0)
    gpu = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0, device="cuda")
    configure_adapter(gpu, "fp32")
    np.testing.assert_allclose(gpu.predict(*toy_batch), cpu.predict(*toy_batch), rtol=1e-4, atol=1e-5)

"""C.Origami model, adapter and safe checkpoint loading."""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import shutil
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from screening.core.encode import encode
from screening.models.base import ModelError
from screening.models.checkpoint import file_sha256, read_state_dict
from screening.models.corigami import (
    ConvTransModel,
    CorigamiAdapter,
    CorigamiConfig,
    load_corigami_checkpoint,
    save_corigami_checkpoint,
)

torch.set_num_threads(2)

REF_CKPT_SHA256 = "5f8daef91fd908e80f799eff87f3f336cb92b8067490da822babe619e6d82f85"
ATOL = 1e-4  # README: float64 recomputation moves the map by <= 4.8e-5, so 1e-4 abs is sound on CPU

# A small model through the same code path: 131,072 bp, 9 blocks -> 1024 bp bins, 128 bins.
SMALL = CorigamiConfig(
    mid_hidden=32,
    stem_width=4,
    block_widths=(4, 4, 8, 8, 8, 16, 16, 16, 16),
    n_layers=2,
    n_heads=4,
    ff_hidden=64,
    decoder_hidden=16,
    decoder_blocks=2,
    window_length=131_072,
)


# --------------------------------------------------------------------------- helpers


def _random_windows(config: CorigamiConfig, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 5, size=(n, config.window_length), dtype=np.uint8)
    tracks = rng.gamma(1.0, 1.0, size=(n, config.num_genomic_features, config.window_length)).astype(np.float32)
    return codes, tracks


def _lightning_checkpoint(model: torch.nn.Module) -> dict:
    """The layout Lightning 1.5.8 writes for C.Origami's ``TrainModule(args)``."""
    return {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": "1.5.8",
        "state_dict": OrderedDict((f"model.{k}", v) for k, v in model.state_dict().items()),
        "hparams_name": "kwargs",
        "hyper_parameters": {"args": argparse.Namespace(model_type="ConvTransModel", run_seed=1)},
    }


@pytest.fixture(scope="module")
def small() -> CorigamiAdapter:
    return CorigamiAdapter.random_init(SMALL, seed=3)


@pytest.fixture(scope="module")
def small_ckpt(small: CorigamiAdapter, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "small.ckpt"
    torch.save(_lightning_checkpoint(small.module), path)
    return path


# --------------------------------------------------------------------------- architecture


def test_default_architecture_matches_release() -> None:
    with torch.device("meta"):
        model = ConvTransModel()
    state = model.state_dict()
    assert len(state) == 696
    assert sum(p.numel() for p in model.parameters()) == 12_840_369
    assert tuple(state["attn.pos_encoder.pe"].shape) == (256, 1, 256)
    cfg = CorigamiConfig()
    assert (cfg.bin_size, cfg.n_bins, cfg.n_channels) == (8192, 256, 7)


def test_config_rejects_bad_window() -> None:
    with pytest.raises(ModelError, match="multiple of the encoder stride"):
        CorigamiConfig(window_length=100_000)


def test_small_forward_shape_and_geometry(small: CorigamiAdapter) -> None:
    codes, tracks = _random_windows(SMALL, 2, seed=0)
    out = small.predict(codes, tracks)
    assert out.shape == (2, 128, 128) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert small.geometry.window_length == 131_072
    assert (small.geometry.bin_size, small.geometry.n_bins) == (1024, 128)
    assert small.track_names == ("ctcf", "atac") and small.symmetric is False


def test_small_batch_position_independent(small: CorigamiAdapter) -> None:
    """Each sample gets pe[0] (the released batch-size-1 behaviour), whatever its batch slot."""
    codes, tracks = _random_windows(SMALL, 3, seed=1)
    batched = small.predict(codes, tracks)
    reversed_ = small.predict(codes[::-1].copy(), tracks[::-1].copy())[::-1]
    for b in range(3):
        alone = small.predict(codes[b : b + 1], tracks[b : b + 1])[0]
        np.testing.assert_allclose(batched[b], alone, atol=1e-5, rtol=0)
        np.testing.assert_allclose(reversed_[b], alone, atol=1e-5, rtol=0)
    assert not np.allclose(batched[0], batched[1])


def test_forward_is_differentiable(small: CorigamiAdapter) -> None:
    codes, tracks = _random_windows(SMALL, 1, seed=2)
    inputs = small.build_input(codes, tracks).requires_grad_(True)
    small.forward(inputs).mean().backward()
    assert inputs.grad is not None and inputs.grad.shape == inputs.shape


def test_build_input_layout(small: CorigamiAdapter) -> None:
    codes = np.zeros((1, SMALL.window_length), dtype=np.uint8)
    codes[0, :5] = encode("ACGTN")
    tracks = np.zeros((1, 2, SMALL.window_length), dtype=np.float32)
    tracks[0, 0, :3] = [-1.5, 2.0, 3.0]
    tracks[0, 1, :3] = [0.5, 0.25, 7.0]
    x = small.build_input(codes, tracks)
    assert x.dtype == torch.float32 and tuple(x.shape) == (1, SMALL.window_length, 7)
    # channels A, T, C, G, N, then the tracks
    expected_dna = [[1, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1]]
    np.testing.assert_array_equal(x[0, :5, :5].numpy(), expected_dna)
    np.testing.assert_array_equal(x[0, :3, 5].numpy(), [-1.5, 2.0, 3.0])
    np.testing.assert_array_equal(x[0, :3, 6].numpy(), [0.5, 0.25, 7.0])


def test_build_input_rejects_bad_shapes(small: CorigamiAdapter) -> None:
    codes, tracks = _random_windows(SMALL, 1, seed=0)
    with pytest.raises(ModelError, match="tracks"):
        small.build_input(codes, None)
    with pytest.raises(ModelError, match="tracks"):
        small.build_input(codes, tracks[:, :1])
    with pytest.raises(ModelError, match="codes"):
        small.build_input(codes[:, :-1], tracks[:, :, :-1])


def test_random_init_is_seeded_and_leaves_global_rng() -> None:
    state = torch.random.get_rng_state()
    a = CorigamiAdapter.random_init(SMALL, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())
    assert a.checksum == CorigamiAdapter.random_init(SMALL, seed=5).checksum
    assert a.checksum != CorigamiAdapter.random_init(SMALL, seed=6).checksum


# --------------------------------------------------------------------------- factorised decoder (issue 20 item 5)

# (kernel, padding, dilation): C.Origami's first decoder conv is (3, 1, 1); the others check that the
# border bookkeeping is general (dilated, wide, unpadded, non-square, 1 x 1).
CONV_SHAPES = [(3, 1, 1), (3, 2, 2), (5, 2, 1), (5, 4, 2), (3, 0, 1), ((3, 5), (1, 2), (1, 1)), (1, 0, 1)]


def _random_conv(d: int, out: int, shape, dtype: torch.dtype, bias: bool, seed: int) -> torch.nn.Conv2d:
    kernel, padding, dilation = shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        conv = torch.nn.Conv2d(2 * d, out, kernel, padding=padding, dilation=dilation, bias=bias).to(dtype)
        with torch.no_grad():  # weights and bias of order 1, so that errors are not hidden by small weights
            conv.weight.normal_(0.0, 1.0 / conv.weight[0].numel() ** 0.5)
            if bias:
                conv.bias.normal_(0.0, 1.0)
    return conv


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=str)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 32])
def test_pairwise_conv2d_equals_the_2d_convolution(n: int, shape, dtype: torch.dtype, atol: float) -> None:
    """Row conv + column conv, broadcast and added, is the 2-D conv of [f_j; f_i], borders included."""
    from screening.models.corigami import _pairwise, pairwise_conv2d

    d = 6
    conv = _random_conv(d, 5, shape, dtype, bias=n % 2 == 1, seed=n)
    features = torch.randn(2, d, n, dtype=dtype, generator=torch.Generator().manual_seed(n))
    try:
        expected = conv(_pairwise(features))
    except RuntimeError:  # kernel wider than the padded map: no output, refused on both paths
        with pytest.raises(RuntimeError):
            pairwise_conv2d(features, conv)
        return
    with torch.no_grad():
        got = pairwise_conv2d(features, conv)
    assert got.shape == expected.shape and got.dtype == dtype
    torch.testing.assert_close(got, expected.detach(), atol=atol, rtol=0)


def test_pairwise_conv2d_channels_last_and_fallback() -> None:
    from screening.models.corigami import _pairwise, pairwise_conv2d

    conv = _random_conv(8, 4, (3, 1, 1), torch.float32, bias=True, seed=0)
    features = torch.randn(3, 8, 11)
    expected = conv(_pairwise(features)).detach()
    conv.to(memory_format=torch.channels_last)
    with torch.no_grad():
        got = pairwise_conv2d(features, conv)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    strided = torch.nn.Conv2d(16, 4, 3, stride=2, padding=1)  # not factorisable: computed the original way
    with torch.no_grad():
        torch.testing.assert_close(pairwise_conv2d(features, strided), strided(_pairwise(features)))


def test_factorised_decoder_is_the_default_and_keeps_the_state_dict() -> None:
    with torch.device("meta"):
        fast, plain = ConvTransModel(), ConvTransModel(factorised_decoder=False)
    assert fast.factorised_decoder and not plain.factorised_decoder
    assert {k: v.shape for k, v in fast.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    assert len(fast.state_dict()) == 696


def _both_paths(adapter: CorigamiAdapter, inputs: torch.Tensor, grad: bool) -> list[tuple[torch.Tensor, ...]]:
    model = adapter.module
    results = []
    for factorised in (True, False):
        model.factorised_decoder = factorised
        model.zero_grad(set_to_none=True)
        x = inputs.clone().requires_grad_(grad)
        torch.manual_seed(0)  # dropout draws (training mode) are the same on both paths
        try:
            out = model(x)
            if grad:
                (out * torch.linspace(-1, 2, out.numel()).view_as(out)).sum().backward()
                params = torch.cat([p.grad.flatten() for p in model.parameters()])
                results.append((out.detach(), x.grad, params))
            else:
                results.append((out.detach(),))
        finally:
            model.factorised_decoder = True
    return results


@pytest.mark.parametrize("config", [SMALL, replace(SMALL, window_length=4096)], ids=["128-bins", "4-bins"])
def test_factorised_model_matches_the_original_path(config: CorigamiConfig, one_thread) -> None:
    """The whole model, both paths, random weights and non-trivial BatchNorm statistics; tiny maps included."""
    adapter = CorigamiAdapter.random_init(config, seed=4)
    with torch.no_grad():
        for name, buf in adapter.module.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                buf.normal_(0.0, 0.3)
    codes, tracks = _random_windows(config, 2, seed=5)
    fast, plain = _both_paths(adapter, adapter.build_input(codes, tracks), grad=False)
    scale = plain[0].abs().max().item()
    assert (fast[0] - plain[0]).abs().max().item() <= 1e-5 * max(scale, 1.0)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_factorised_decoder_gradients_match(training: bool, one_thread) -> None:
    """Input and parameter gradients agree on both paths (attribution backpropagates through the model)."""
    config = replace(SMALL, window_length=16_384)  # 16 bins
    adapter = CorigamiAdapter.random_init(config, seed=6)
    adapter.module.train(training)
    codes, tracks = _random_windows(config, 2, seed=7)
    fast, plain = _both_paths(adapter, adapter.build_input(codes, tracks), grad=True)
    for got, expected in zip(fast, plain):
        scale = expected.abs().max().item()
        assert scale > 0
        assert (got - expected).abs().max().item() <= 1e-4 * scale


# --------------------------------------------------------------------------- checkpoint loading


def test_lightning_checkpoint_with_namespace_loads(small: CorigamiAdapter, small_ckpt: Path, monkeypatch) -> None:
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    loaded = CorigamiAdapter.from_checkpoint(small_ckpt, config=SMALL)
    assert calls == [True]  # never weights_only=False
    assert loaded.config == SMALL
    assert loaded.checksum == file_sha256(small_ckpt)
    assert loaded.name == "corigami:small.ckpt"
    codes, tracks = _random_windows(SMALL, 1, seed=4)
    np.testing.assert_array_equal(loaded.predict(codes, tracks), small.predict(codes, tracks))


def test_config_inferred_from_shapes(small_ckpt: Path) -> None:
    _, cfg = load_corigami_checkpoint(small_ckpt)
    assert cfg == replace(SMALL, n_heads=8)  # heads are invisible in shapes: default


def test_saved_config_round_trip(small: CorigamiAdapter, tmp_path: Path) -> None:
    path = tmp_path / "own.ckpt"
    save_corigami_checkpoint(path, small.module)
    loaded = CorigamiAdapter.from_checkpoint(path)
    assert loaded.config == SMALL
    codes, tracks = _random_windows(SMALL, 1, seed=4)
    np.testing.assert_array_equal(loaded.predict(codes, tracks), small.predict(codes, tracks))


def test_bare_state_dict_loads(small: CorigamiAdapter, tmp_path: Path) -> None:
    path = tmp_path / "bare.pt"
    torch.save(small.module.state_dict(), path)
    state, cfg = load_corigami_checkpoint(path, SMALL)
    assert cfg == SMALL and set(state) == set(small.module.state_dict())


def test_size_mismatch_names_keys_and_shapes(small: CorigamiAdapter, tmp_path: Path) -> None:
    other = CorigamiAdapter.random_init(replace(SMALL, mid_hidden=16), seed=0)
    state = {f"model.{k}": v for k, v in other.module.state_dict().items()}
    state.pop("model.decoder.conv_end.bias")
    state["model.extra.weight"] = torch.zeros(3)
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ModelError) as info:
        load_corigami_checkpoint(path, SMALL)
    msg = str(info.value)
    assert str(path) in msg
    assert "1 missing keys: decoder.conv_end.bias" in msg
    assert "1 unexpected keys: extra.weight" in msg
    assert "encoder.conv_end.weight: checkpoint (16, 32, 1) vs model (32, 32, 1)" in msg
    assert "shape mismatches" in msg and "more" in msg  # counted, first 10 listed


def test_unsafe_global_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "exploit.ckpt"
    torch.save({"state_dict": {"model.x": Exploit()}}, path)
    with pytest.raises(ModelError, match=r"refused to unpickle .*system"):
        read_state_dict(path)
    raw = tmp_path / "exploit.pkl"
    raw.write_bytes(pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(ModelError, match=str(raw)):
        read_state_dict(raw)
    assert not marker.exists()


class _SneakyDict(OrderedDict):
    """A dict subclass: harmless here, but not an allowed global."""


def test_dict_subclass_refused(tmp_path: Path) -> None:
    path = tmp_path / "sub.ckpt"
    torch.save(_SneakyDict(w=torch.zeros(1)), path)
    with pytest.raises(ModelError, match="_SneakyDict"):
        read_state_dict(path)


def test_truncated_file(small_ckpt: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.ckpt"
    data = small_ckpt.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated.ckpt: corrupt or truncated"):
        read_state_dict(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such file"):
        load_corigami_checkpoint(tmp_path / "absent.ckpt")


def test_non_checkpoint_pickle(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ModelError, match="not a model checkpoint"):
        read_state_dict(path)


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1000)
    assert file_sha256(path, chunk_size=7) == hashlib.sha256(b"abc" * 1000).hexdigest()


# --------------------------------------------------------------------------- reference reproduction

WINDOW = 2_097_152


@pytest.fixture(scope="module")
def ref_dir(shared_dir: Path) -> Path:
    return shared_dir / "reference" / "corigami"


@pytest.fixture(scope="module")
def ref_adapter(ref_dir: Path) -> CorigamiAdapter:
    return CorigamiAdapter.from_checkpoint(ref_dir / "model.ckpt")


@pytest.fixture(scope="module")
def ref_window(ref_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """``start -> (codes, tracks)`` read with C.Origami's conventions (ATAC NaN→0, log1p; CTCF raw, NaN→0)."""
    import pyBigWig
    import pyfaidx

    fasta_path = tmp_path_factory.mktemp("genome") / "genome.fa"
    shutil.copyfile(ref_dir / "genome.fa", fasta_path)  # the shared dir is read-only and has no .fai
    fasta = pyfaidx.Fasta(str(fasta_path), sequence_always_upper=False)
    bigwigs = {name: pyBigWig.open(str(ref_dir / f"{name}.bw")) for name in ("ctcf", "atac")}

    def read(start: int) -> tuple[np.ndarray, np.ndarray]:
        end = start + WINDOW
        codes = encode(str(fasta["chr1"][start:end]))
        ctcf = np.nan_to_num(bigwigs["ctcf"].values("chr1", start, end, numpy=True).astype(np.float64))
        atac = np.log1p(np.nan_to_num(bigwigs["atac"].values("chr1", start, end, numpy=True).astype(np.float64)))
        return codes, np.stack([ctcf, atac]).astype(np.float32)

    yield read
    for bw in bigwigs.values():
        bw.close()
    fasta.close()


@pytest.mark.reference
def test_reference_checkpoint_identity(ref_adapter: CorigamiAdapter) -> None:
    assert ref_adapter.checksum == REF_CKPT_SHA256
    assert ref_adapter.config == CorigamiConfig()
    assert ref_adapter.module.training is False


@pytest.mark.reference
@pytest.mark.parametrize("factorised", [True, False], ids=["factorised-decoder", "pairwise-map"])
def test_reference_prediction_batch1(ref_adapter: CorigamiAdapter, ref_window, ref_dir: Path, factorised: bool) -> None:
    """Batch size 1 reproduces the original's output for chr1:[500000, 2597152) within atol 1e-4.

    Both decoder paths: the factorised first convolution (the default) and the original's
    2-D convolution of the 512-channel pairwise map.
    """
    codes, tracks = ref_window(500_000)
    ref_adapter.module.factorised_decoder = factorised
    try:
        pred = ref_adapter.predict(codes[None], tracks[None])[0]
    finally:
        ref_adapter.module.factorised_decoder = True
    np.testing.assert_allclose(pred, np.load(ref_dir / "pred_chr1_500000.npy"), atol=ATOL, rtol=0)


@pytest.mark.reference
def test_reference_prediction_batch2(ref_adapter: CorigamiAdapter, ref_window, ref_dir: Path) -> None:
    """Batch of 2: both slots reproduce their batch-size-1 references within atol 1e-4.

    chr1:[500000, 2597152) sits in slot 1, where the original's ``pe[:batch]`` quirk
    would shift it by up to 1.0; slot 0 holds the screen's reference window
    chr1:[351924, 2449076).
    """
    first, second = ref_window(351_924), ref_window(500_000)
    codes = np.stack([first[0], second[0]])
    tracks = np.stack([first[1], second[1]])
    pred = ref_adapter.predict(codes, tracks)
    np.testing.assert_allclose(pred[0], np.load(ref_dir / "pred_ref_chr1_1400000_1000.npy"), atol=ATOL, rtol=0)
    np.testing.assert_allclose(pred[1], np.load(ref_dir / "pred_chr1_500000.npy"), atol=ATOL, rtol=0)


def test_decoder_benchmark_runs_on_a_toy_model(one_thread) -> None:
    """Smoke test of benchmarks/corigami_decoder.py (no timing asserted; the full-size run is in docs/benchmarks.md)."""
    import importlib.util
    import json

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "corigami_decoder.py"
    spec = importlib.util.spec_from_file_location("corigami_decoder", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    toy = {"mid_hidden": 16, "stem_width": 4, "block_widths": [4, 4, 8, 8], "n_layers": 1, "n_heads": 2,
           "ff_hidden": 16, "decoder_hidden": 8, "decoder_blocks": 2, "window_length": 512}
    record = bench.main(["--threads", "1", "--repeats", "1", "--model-config", json.dumps(toy)])
    for part in bench.PARTS:
        assert record[part]["max_abs_diff"] <= 1e-5 and record[part]["speedup"] > 0
    flops = record["flops"]
    assert flops["original"]["first_conv"] == flops["first_conv_analytic"]["conv2d"] == 2 * 16 * 16 * 8 * 32 * 9
    assert flops["factorised"]["first_conv"] == flops["first_conv_analytic"]["factorised"]
    assert flops["saved"] == flops["original"]["first_conv"] - flops["factorised"]["first_conv"]
    assert torch.get_num_threads() == 1  # restored by one_thread afterwards

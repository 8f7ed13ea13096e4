"""Attention maps with a stability check (screening.interpret.attention, `screening attention`): recomputed weights
equal the module's own and a manual softmax(QKᵀ/√d), the stability numbers are what they claim, the verdict follows
the documented thresholds, outputs are written atomically and a model without attention is refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from helpers import TOY_CONFIG, toy_spec_dict
from interpret_toys import DenseMapModel, ToyAdapter
from torch import nn

from screening.cli import main
from screening.core.errors import ScreeningError
from screening.interpret.attention import (
    AttentionError,
    AttentionResult,
    Conditioning,
    Thresholds,
    _verdict,
    attention_report,
    attention_weights,
    capture_attention,
    conditioning,
    quiet_substitutions,
    reverse_complement_window,
    total_variation,
    write_attention_outputs,
)
from screening.models.corigami import CorigamiAdapter, CorigamiConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread (see conftest)


def _manual(mha: nn.MultiheadAttention, x: torch.Tensor) -> np.ndarray:
    """softmax(Q Kᵀ / √d_head) per head, written out with numpy from the module's parameters ([B, L, E] input)."""
    w = mha.in_proj_weight.detach().numpy()
    b = mha.in_proj_bias.detach().numpy()
    e, h = mha.embed_dim, mha.num_heads
    d = e // h
    x = x.detach().numpy().astype(np.float64)
    q = x @ w[:e].T + b[:e]
    k = x @ w[e : 2 * e].T + b[e : 2 * e]
    out = np.empty((x.shape[0], h, x.shape[1], x.shape[1]))
    for head in range(h):
        qh, kh = q[..., head * d : (head + 1) * d], k[..., head * d : (head + 1) * d]
        logits = qh @ kh.transpose(0, 2, 1) / math.sqrt(d)
        logits -= logits.max(-1, keepdims=True)
        out[:, head] = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return out


@pytest.mark.parametrize("batch_first", [True, False])
def test_weights_equal_the_module_and_a_manual_computation(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first).eval()
    x = torch.randn(3, 5, 8)
    given = x if batch_first else x.transpose(0, 1)
    ours = attention_weights(mha, given, given)
    _, theirs = mha(given, given, given, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.detach().numpy(), _manual(mha, x), rtol=1e-5, atol=1e-6)
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[:, 4] = True
    padding = torch.tensor([[False] * 4 + [True]] * 3)
    _, theirs = mha(given, given, given, attn_mask=mask, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(attention_weights(mha, given, given, attn_mask=mask), theirs, rtol=1e-5, atol=1e-6)
    _, theirs = mha(given, given, given, key_padding_mask=padding, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(
        attention_weights(mha, given, given, key_padding_mask=padding), theirs, rtol=1e-5, atol=1e-6
    )


def test_capture_on_a_tiny_corigami_equals_manual():
    adapter = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG))
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, 512).astype(np.uint8)
    tracks = rng.random((2, 512), dtype=np.float32)
    prediction, weights, features = capture_attention(adapter, codes, tracks)
    np.testing.assert_allclose(
        prediction, adapter.predict(codes[None], tracks[None])[0], rtol=1e-6
    )  # forward untouched
    assert weights.shape == (1, 2, 16, 16) and features[0].shape == (16, 16)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    mha = adapter.module.attn.module.layers[0].self_attn
    np.testing.assert_allclose(weights, _manual(mha, torch.from_numpy(features[0])[None]), rtol=1e-4, atol=1e-6)


def test_stability_numbers_on_a_toy_model():
    adapter = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG))
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 4, 512).astype(np.uint8)
    tracks = np.zeros((2, 512), np.float32)
    tracks[:, 100:110] = 5.0  # one peak: substitutions stay 100 bp away
    result = attention_report(adapter, codes, tracks, "chr1", 0, n_substitutions=2, repeats=3, margin=100, seed=7)
    reference, weights, _ = capture_attention(adapter, codes, tracks)
    again = np.random.default_rng(7)
    for i in range(3):  # the numbers are what they say: recompute each from the same draws
        edited, positions = quiet_substitutions(codes, tracks, 2, again, 100)
        assert positions.tolist() == result.substitutions[i]
        assert np.all((positions < 0) | (positions >= 210))
        other, other_weights, _ = capture_attention(adapter, edited, tracks)
        change = np.linalg.norm(other - reference) / np.linalg.norm(reference)
        assert result.perturbation_map_change[i] == pytest.approx(change, rel=1e-6)
        np.testing.assert_allclose(result.perturbation_attention[i], total_variation(weights, other_weights))
    rc_codes, rc_tracks = reverse_complement_window(codes, tracks)
    _, rc_weights, _ = capture_attention(adapter, rc_codes, rc_tracks)
    np.testing.assert_allclose(result.rc_attention, total_variation(weights, rc_weights[..., ::-1, ::-1]))
    assert len(result.conditioning) == 1 and result.conditioning[0].structural_nulls >= 1  # LayerNorm's zero mean
    assert result.reliable == (not result.reasons)


def test_helpers():
    a = np.array([[0.5, 0.5], [1.0, 0.0]])
    assert total_variation(a, a) == 0.0
    assert total_variation(a, a[:, ::-1]) == pytest.approx(0.5)  # rows: 0 and 1
    codes = np.array([0, 1, 2, 3, 4, 0], np.uint8)
    rc, _ = reverse_complement_window(codes, None)
    assert rc.tolist() == [3, 4, 0, 1, 2, 3]
    assert reverse_complement_window(rc, None)[0].tolist() == codes.tolist()
    edited, positions = quiet_substitutions(np.zeros(50, np.uint8), None, 4, np.random.default_rng(0))
    assert len(positions) == 4 and np.all(edited[positions] != 0) and np.sum(edited != 0) == 4
    orthogonal = np.linalg.qr(np.random.default_rng(0).normal(size=(32, 8)))[0] * 3
    good = conditioning(orthogonal - orthogonal.mean(0), head_dim=4)
    assert good.condition < 1.5 and good.relative_rank > 0.9 and not good.identifiable
    base = np.random.default_rng(1).normal(size=(32, 1))
    collinear = base @ np.ones((1, 8)) + 1e-5 * np.random.default_rng(2).normal(size=(32, 8))
    bad = conditioning(collinear, head_dim=64)
    assert bad.condition > 1e3 and bad.identifiable


def _result(map_change, attention, rc_map, rc_attention, condition=10.0, rank=0.5):
    result = AttentionResult("chr1", 0, ["layer"], np.zeros((2, 2)), np.zeros((1, 1, 2, 2)))
    result.perturbation_map_change = [map_change]
    result.perturbation_attention = np.full((1, 1, 1), attention)
    result.substitutions = [[1, 2, 3]]
    result.rc_map_change = rc_map
    result.rc_attention = np.full((1, 1), rc_attention)
    result.conditioning = [Conditioning(condition, rank * 2, rank, 0, True)]
    _verdict(result)
    return result


def test_verdict_follows_the_thresholds():
    t = Thresholds()
    assert _result(0.001, 0.01, 0.01, 0.05).reliable
    unstable = _result(t.map_unchanged / 2, t.attention_changed * 2, 0.01, 0.05)
    assert not unstable.reliable and "substitutions" in unstable.reasons[0]
    inconclusive = _result(t.map_unchanged * 2, 0.9, 0.01, 0.05)
    assert inconclusive.reliable and "inconclusive" in inconclusive.notes[0]
    assert "reverse complement" in _result(0.001, 0.01, t.rc_map_agrees / 2, t.rc_attention_changed * 2).reasons[0]
    assert "ill-conditioned" in _result(0.001, 0.01, 0.01, 0.05, condition=t.condition * 2).reasons[0]
    assert "ill-conditioned" in _result(0.001, 0.01, 0.01, 0.05, rank=t.effective_rank / 2).reasons[0]


def test_outputs_are_written_atomically(tmp_path, monkeypatch):
    adapter = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG))
    codes = np.random.default_rng(3).integers(0, 4, 512).astype(np.uint8)
    result = attention_report(adapter, codes, np.ones((2, 512), np.float32), "chr1", 0, repeats=2, margin=10)
    written = write_attention_outputs(result, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "attention.npz",
        "attention.png",
        "report.md",
        "stability.tsv",
    ]
    with np.load(written["weights"]) as saved:
        np.testing.assert_array_equal(saved["weights"], result.weights)
    assert len(written["table"].read_text().splitlines()) == 1 + 2  # a row per head
    report = written["report"].read_text()
    assert ("NOT a reliable explanation" in report) == (not result.reliable)
    monkeypatch.setattr("screening.interpret.attention._report_md", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_attention_outputs(result, tmp_path / "out", plots=False)
    assert written["report"].read_text() == report
    assert not [p for p in (tmp_path / "out").iterdir() if "tmp" in p.name]


def test_model_without_attention_is_refused():
    adapter = ToyAdapter(DenseMapModel())
    with pytest.raises(AttentionError, match="no attention layers") as err:
        attention_report(adapter, np.zeros(1024, np.uint8), None)
    assert isinstance(err.value, ScreeningError)
    from screening.models.orca import OrcaAdapter, OrcaConfig

    orca = OrcaAdapter.random_init(
        OrcaConfig(
            encoder_channels=[4, 4],
            pools=[4],
            n_bins=8,
            decoder_channels=4,
            decoder_hidden=4,
            dilations=[1],
            head_hidden=2,
            num_1d=1,
        )
    )
    assert orca.attention_modules() == []
    with pytest.raises(AttentionError, match="no attention layers"):
        capture_attention(orca, np.zeros(orca.geometry.window_length, np.uint8), None)


def test_cli_attention(toy_paths, tmp_path, capsys):
    spec = tmp_path / "toy.yaml"
    spec.write_text(yaml.safe_dump(toy_spec_dict(toy_paths, tmp_path / "store.zarr")))
    out = tmp_path / "attention"
    assert main(["attention", str(spec), "chr9:0-10", str(out)]) == 2
    assert "unknown chromosome" in capsys.readouterr().err and not out.exists()
    assert main(["attention", str(spec), "chr1:2,000-2,400", str(out), "--repeats", "2", "--no-plots"]) == 0
    assert (out / "report.md").is_file() and (out / "attention.npz").is_file()
    assert "1 layers × 2 heads" in capsys.readouterr().out

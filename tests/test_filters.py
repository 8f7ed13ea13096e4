"""First-layer filters as PWMs (screening.interpret.filters, `screening filters`): a planted motif comes back as the
PPM of the filter that holds it, the receptive field of a deeper layer is measured right, the mean-replacement hook
gives the influence a manual ablation gives, outputs are written atomically and bad inputs are refused."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml
from helpers import TOY_CONFIG, toy_spec_dict
from interpret_toys import MOTIF, ConvMapModel, DenseMapModel, ToyAdapter, planted_genome

from screening.cli import main
from screening.core.errors import ScreeningError
from screening.core.regions import Region
from screening.interpret.filters import (
    FilterError,
    Window,
    ablate_filters,
    centred_window,
    filter_motifs,
    filter_ppms,
    filter_table,
    information_content,
    resolve_layer,
    sample_windows,
    write_filter_outputs,
)
from screening.interpret.motifs import load_jaspar
from screening.maps.score import impact_mean_abs
from screening.models.corigami import CorigamiAdapter, CorigamiConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread (see conftest)

WINDOWS = [Window("chr1", s) for s in range(0, 8_192, 1_024)]


@pytest.fixture(scope="module")
def jaspar():
    return load_jaspar()


def test_planted_motif_is_the_ppm_of_its_filter():
    genome, starts = planted_genome()
    adapter = ToyAdapter(ConvMapModel())
    layer = resolve_layer(adapter)
    assert (layer.name, layer.width, layer.stride, layer.offset) == ("conv", 8, 1, -3)
    counts, n_sites, maxima, means = filter_ppms(adapter, layer, genome, None, WINDOWS, threshold=0.5)
    # every planted site lies wholly inside one window here; filter 0 fires only on exact copies
    inside = [s for s in starts if any(w.start <= s and s + 8 <= w.start + 1024 for w in WINDOWS)]
    assert n_sites[0] >= len(inside) > 20
    assert maxima[0] == pytest.approx(4.0)
    consensus = "".join("ACGT"[i] for i in counts[0].argmax(axis=0))
    assert consensus == MOTIF
    assert counts[0].max(axis=0).min() == n_sites[0]  # every site is the exact motif
    ppm = counts[0] / counts[0].sum(axis=0)
    assert information_content(ppm) == pytest.approx(16.0)
    assert means.shape == (3,) and np.all(n_sites[1:] > 0)


def test_threshold_selects_more_sites_when_lower():
    genome, _ = planted_genome()
    adapter = ToyAdapter(ConvMapModel())
    layer = resolve_layer(adapter)
    _, high, _, _ = filter_ppms(adapter, layer, genome, None, WINDOWS[:2], threshold=0.9)
    _, low, _, _ = filter_ppms(adapter, layer, genome, None, WINDOWS[:2], threshold=0.2)
    assert np.all(low[1:] > high[1:])
    with pytest.raises(FilterError, match="threshold"):
        filter_ppms(adapter, layer, genome, None, WINDOWS[:2], threshold=1.0)


def test_deeper_layer_receptive_field_is_measured():
    adapter = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG))
    first = resolve_layer(adapter)
    assert (first.name, first.width, first.stride, first.offset) == ("encoder.conv_start_seq.0", 3, 2, -1)
    # stem k3 s2 p1, then block 0's k5 s2 p2 conv: activation u sees bases 4u - 5 .. 4u + 5
    deep = resolve_layer(adapter, "encoder.res_blocks_seq.0.scale")
    assert (deep.width, deep.stride, deep.offset) == (11, 4, -5)
    with pytest.raises(FilterError, match="does not see the DNA"):
        resolve_layer(adapter, "encoder.conv_start_epi")
    with pytest.raises(FilterError, match="no layer 'nope'"):
        resolve_layer(adapter, "nope")


def test_influence_hook_equals_a_manual_ablation():
    genome, _ = planted_genome()
    adapter = ToyAdapter(ConvMapModel())
    layer = resolve_layer(adapter)
    codes = genome.fetch("chr1", 0, 1024)
    means = np.array([0.3, -0.2, 0.1])
    batched = ablate_filters(adapter, layer, codes, None, means, batch_size=3)
    single = ablate_filters(adapter, layer, codes, None, means, batch_size=1)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)
    reference = adapter.predict(codes[None], None)
    for f in range(3):  # a filter replaced by a constant = its weights zeroed, its bias the constant
        model = copy.deepcopy(adapter.module)
        with torch.no_grad():
            model.conv.weight[f] = 0
            model.conv.bias[f] = float(means[f])
        ablated = ToyAdapter(model).predict(codes[None], None)
        assert batched[f] == pytest.approx(float(impact_mean_abs(reference, ablated)[0]), rel=1e-5, abs=1e-6)
    assert batched[1] < 1e-6  # filter 1 does not reach the map (float rounding only)
    assert batched[0] > 0 and batched[2] > 0
    with pytest.raises(FilterError, match="cannot rank filters"):
        ablate_filters(adapter, layer, codes, None, means, score="insulation_delta")


def test_filter_motifs_and_atomic_outputs(tmp_path, jaspar, monkeypatch):
    genome, _ = planted_genome()
    adapter = ToyAdapter(ConvMapModel())
    result = filter_motifs(adapter, genome, None, WINDOWS, influence_windows=2, database=jaspar)
    assert [f.index for f in result.filters] == [0, 1, 2]
    assert result.filters[0].n_sites > 20 and result.filters[0].best is not None
    assert result.filters[1].influence < 1e-6 and result.filters[0].influence > 0
    table = filter_table(result)
    assert table["filter"].iloc[-1] == 1  # ranked by influence
    written = write_filter_outputs(result, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["filters.meme", "filters.tsv", "logos", "report.md"]
    assert "MOTIF filter_0" in written["meme"].read_text()
    report = written["report"].read_text()
    assert "What this can and cannot show" in report and "logos/filter_0.png" in report
    before = report

    def broken(*args, **kwargs):
        raise RuntimeError("disk trouble")

    monkeypatch.setattr("screening.interpret.filters._report_md", broken)
    with pytest.raises(RuntimeError):
        write_filter_outputs(result, tmp_path / "out", logos=False)
    assert written["report"].read_text() == before  # the old report stays whole
    assert not [p for p in (tmp_path / "out").rglob("*") if "tmp" in p.name]


def test_model_without_first_layer_is_refused():
    genome, _ = planted_genome()
    adapter = ToyAdapter(DenseMapModel())
    assert adapter.first_sequence_layer() is None
    with pytest.raises(FilterError, match="no accessible first sequence layer") as err:
        filter_motifs(adapter, genome, None, WINDOWS[:1], influence_windows=0)
    assert isinstance(err.value, ScreeningError)
    with pytest.raises(FilterError, match="influence_windows"):
        filter_motifs(ToyAdapter(ConvMapModel()), genome, None, WINDOWS[:1], influence_windows=-1)


def test_windows():
    sizes = {"chr1": 10_000, "chr2": 900}
    assert centred_window(Region("chr1", 9_900, 10_000), sizes, 1024) == Window("chr1", 10_000 - 1024)
    assert centred_window(Region("chr1", 0, 10), sizes, 1024) == Window("chr1", 0)
    windows = sample_windows([Region("chr1", 2_000, 6_000)], sizes, 1024, 5, seed=1)
    assert windows == sample_windows([Region("chr1", 2_000, 6_000)], sizes, 1024, 5, seed=1)
    assert all(1_000 <= w.start + 512 <= 6_512 and w.start + 1024 <= 10_000 for w in windows)
    with pytest.raises(FilterError, match="shorter than the model window"):
        sample_windows([Region("chr2", 0, 900)], sizes, 1024, 2)


def test_cli_filters(toy_paths, tmp_path, capsys):
    spec = tmp_path / "toy.yaml"
    spec.write_text(yaml.safe_dump(toy_spec_dict(toy_paths, tmp_path / "store.zarr")))
    out = tmp_path / "filters"
    assert main(["filters", str(spec), str(out), "--layer", "nope"]) == 2
    assert "no layer 'nope'" in capsys.readouterr().err
    assert not out.exists()
    assert main(["filters", str(spec), str(out), "--threshold", "1.5"]) == 2
    assert not out.exists()
    assert main(["filters", str(spec), str(out), "--windows", "2", "--influence-windows", "1", "--no-plots"]) == 0
    assert (out / "report.md").is_file() and (out / "filters.tsv").is_file()
    assert "layer encoder.conv_start_seq.0: 4 filters" in capsys.readouterr().out


def test_orca_first_layer_and_strand_averaging():
    from screening.models.orca import OrcaAdapter, OrcaConfig

    config = OrcaConfig(
        encoder_channels=[4, 6, 8, 8],
        pools=[4, 4, 5],
        kernel_size=3,
        decoder_channels=8,
        decoder_hidden=4,
        dilations=[1, 2, 4],
        head_hidden=3,
        num_1d=2,
        n_bins=16,
    )
    plain = OrcaAdapter.random_init(config, seed=1)
    averaged = OrcaAdapter(plain.module, strand_average=True)
    layer = resolve_layer(plain)
    assert layer.module.in_channels == 4 and (layer.width, layer.stride, layer.offset) == (3, 1, -1)
    genome, _ = planted_genome(length=4 * config.window_length)
    windows = [Window("chr1", 0), Window("chr1", config.window_length)]
    one = filter_ppms(plain, layer, genome, None, windows)
    both = filter_ppms(averaged, resolve_layer(averaged), genome, None, windows)  # forward strand of each pair
    np.testing.assert_allclose(one[0], both[0])
    means = one[3]
    codes = genome.fetch("chr1", 0, config.window_length)
    assert ablate_filters(averaged, resolve_layer(averaged), codes, None, means).shape == (len(means),)

"""Users' own models (kind: user): import path + checkpoint, TorchScript, load-time refusals, screens."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pydantic import ValidationError

from screening.cli import main
from screening.core.encode import N_CODE
from screening.compute.engine import run_unit
from screening.interpret.unit import run_attribution
from screening.io.genome import Genome
from screening.io.tracks import Track, TrackSet
from screening.models.base import ModelError
from screening.models.loader import load_model
from screening.models.user import UserModelAdapter, import_factory
from screening.spec import ModelSpec, UserModelDeclaration, load_spec, parse_spec

from helpers import toy_spec_dict

pytestmark = pytest.mark.usefixtures("one_thread")

MODULE = "screening_testuser_models"  # unique: Python caches modules by name
BROKEN = "screening_testuser_broken"
USER_MODULE = '''
"""Tiny test models: input [B, L, 5 + 2] (NLC, alphabet ATCGN, tracks ctcf, atac) -> [B, n, n]."""
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, n_channels=7, bin_size=32, hidden=4):
        super().__init__()
        self.bin_size = bin_size
        self.conv = nn.Conv1d(n_channels, hidden, 5, padding=2)
        self.head = nn.Linear(hidden, hidden)

    def forward(self, x):
        h = torch.nn.functional.avg_pool1d(torch.relu(self.conv(x.transpose(1, 2))), self.bin_size)  # [B, H, n]
        return self.head(h.transpose(1, 2)) @ h  # [B, n, n], not symmetric


class NeedsLength(Tiny):
    def forward(self, x):
        if x.shape[1] != 1024:
            raise ValueError(f"this model takes 1024 bp, got {x.shape[1]}")
        return super().forward(x)


class NaNOut(Tiny):
    def forward(self, x):
        out = super().forward(x).clone()
        out[:, 0, 0] = float("nan")
        return out


class TupleOut(Tiny):
    def forward(self, x):
        out = super().forward(x)
        return out, out


def raising(**config):
    raise RuntimeError("factory exploded")


def not_a_module(**config):
    return 42


NOT_CALLABLE = 3
'''

DECLARE = {
    "window_length": 512, "bin_size": 32, "n_bins": 16, "input_layout": "NLC", "alphabet": "ATCGN",
    "tracks": ["ctcf", "atac"],
}


@pytest.fixture(scope="module")
def user_code(tmp_path_factory) -> dict:
    """A folder with the user's module, a trained-looking model and its files in several formats."""
    folder = tmp_path_factory.mktemp("usercode")
    (folder / f"{MODULE}.py").write_text(USER_MODULE)
    (folder / f"{BROKEN}.py").write_text('raise ImportError("needs the package foo")\n')
    tiny = import_factory(f"{MODULE}:Tiny", (str(folder),))
    torch.manual_seed(11)
    model = tiny().eval()
    state = model.state_dict()
    files = {name: folder / name for name in ("wrapped.ckpt", "plain.pt", "wide.pt", "unsafe.pt", "scripted.pt")}
    torch.save({"state_dict": {f"net.{k}": v for k, v in state.items()}, "epoch": 3}, files["wrapped.ckpt"])
    torch.save(state, files["plain.pt"])
    torch.save(tiny(hidden=8).state_dict(), files["wide.pt"])
    torch.save({"state_dict": state, "note": Fraction(1, 3)}, files["unsafe.pt"])
    torch.jit.script(model).save(str(files["scripted.pt"]))
    return {"folder": folder, "model": model, **files}


def user_spec(code: dict, **changes) -> dict:
    """A kind-user model section: the test module's Tiny, seeded, unless changed (None drops a field)."""
    raw = {"kind": "user", "import_path": f"{MODULE}:Tiny", "python_path": [str(code["folder"])], "random_seed": 0,
           "declare": DECLARE}
    raw.update(changes)
    return {k: v for k, v in raw.items() if v is not None}


def load(raw: dict) -> UserModelAdapter:
    return load_model(ModelSpec.model_validate(raw), "cpu")


def random_window(batch: int = 3, length: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 5, (batch, length)).astype(np.uint8)
    return codes, rng.gamma(1.0, 1.0, (batch, 2, length)).astype(np.float32)


def direct(model, codes, tracks) -> np.ndarray:
    """The eager model on a hand-built NLC / ATCGN input."""
    one_hot = (codes[..., None] == np.array([0, 3, 1, 2, 4])).astype(np.float32)  # A T C G N codes
    x = torch.from_numpy(np.concatenate([one_hot, tracks.transpose(0, 2, 1)], axis=-1))
    with torch.no_grad():
        return model(x).numpy()


# --- loading: import path + state dict, TorchScript, seeded random weights ------------------------------------


@pytest.mark.parametrize("source", [
    {"checkpoint": "wrapped.ckpt", "state_dict_prefix": "net."},
    {"checkpoint": "plain.pt"},
])
def test_import_path_with_checkpoint_predicts_as_the_module(user_code, source):
    path = user_code[source["checkpoint"]]
    adapter = load(user_spec(user_code, random_seed=None, **{**source, "checkpoint": str(path)}))
    codes, tracks = random_window()
    np.testing.assert_allclose(adapter.predict(codes, tracks), direct(user_code["model"], codes, tracks), rtol=1e-6)
    assert adapter.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert adapter.name == f"user:{MODULE}:Tiny:{path.name}"
    assert adapter.track_names == ("ctcf", "atac") and adapter.geometry.n_bins == 16


def test_torchscript_route_predicts_as_the_module(user_code):
    adapter = load({"kind": "user", "checkpoint": str(user_code["scripted.pt"]), "declare": DECLARE})
    codes, tracks = random_window()
    np.testing.assert_allclose(adapter.predict(codes, tracks), direct(user_code["model"], codes, tracks), rtol=1e-6)
    assert adapter.name == "user:scripted.pt"
    assert adapter.checksum == hashlib.sha256(user_code["scripted.pt"].read_bytes()).hexdigest()


def test_random_seed_is_reproducible_and_leaves_the_global_rng(user_code):
    before = torch.random.get_rng_state()
    first, again, other = (load(user_spec(user_code, random_seed=s)) for s in (0, 0, 1))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert first.checksum == again.checksum != other.checksum
    codes, tracks = random_window()
    np.testing.assert_array_equal(first.predict(codes, tracks), again.predict(codes, tracks))


def test_nlc_atcgn_input_is_corigami_input():
    from screening.models.corigami import CorigamiAdapter, CorigamiConfig

    from helpers import TOY_CONFIG

    corigami = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG))
    user = UserModelAdapter(torch.nn.Identity(), UserModelDeclaration(**DECLARE))
    codes, tracks = random_window()
    assert torch.equal(user.build_input(codes, tracks), corigami.build_input(codes, tracks))
    assert tuple(user.input_layout) == ((0, 2, 3, 1), (5, 6), 1, 4)


def test_ncl_input_with_n_value_and_no_tracks():
    declaration = UserModelDeclaration(window_length=8, bin_size=4, n_bins=2, input_layout="NCL", alphabet="TGCA",
                                       n_value=0.25)
    adapter = UserModelAdapter(torch.nn.Identity(), declaration)
    codes = np.array([[0, 1, 2, 3, N_CODE, 0, 0, 3]], np.uint8)
    x = adapter.build_input(codes, None).numpy()
    assert x.shape == (1, 4, 8)
    np.testing.assert_array_equal(x[0, :, 0], [0, 0, 0, 1])  # A is the last channel of TGCA
    np.testing.assert_array_equal(x[0, :, 3], [1, 0, 0, 0])
    np.testing.assert_array_equal(x[0, :, 4], [0.25] * 4)
    assert tuple(adapter.input_layout) == ((3, 2, 1, 0), (), 2, None)
    with pytest.raises(ModelError, match="declares no tracks"):
        adapter.build_input(codes, np.ones((1, 1, 8), np.float32))


def test_packaged_example_config_loads_and_is_symmetric():
    spec = load_spec(Path(__file__).parents[1] / "configs" / "user_model.yaml")
    adapter = load_model(spec.model, "cpu")
    declared = spec.model.declare
    assert adapter.symmetric and adapter.track_names == tuple(t.name for t in spec.tracks)
    codes = np.random.default_rng(1).integers(0, 5, (1, declared.window_length)).astype(np.uint8)
    maps = adapter.predict(codes, np.ones((1, len(declared.tracks), declared.window_length), np.float32))
    assert maps.shape == (1, declared.n_bins, declared.n_bins)
    np.testing.assert_allclose(maps[0], maps[0].T, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_user_model_on_cuda_matches_cpu(user_code):
    spec = ModelSpec.model_validate(user_spec(user_code, random_seed=None, checkpoint=str(user_code["plain.pt"])))
    cpu, gpu = load_model(spec, "cpu"), load_model(spec, "cuda")
    assert gpu.device.type == "cuda"
    codes, tracks = random_window()
    np.testing.assert_allclose(gpu.predict(codes, tracks), cpu.predict(codes, tracks), rtol=1e-4, atol=1e-5)


# --- refused at load, naming the field or the import path -----------------------------------------------------


def refusal_cases(code: dict) -> dict[str, tuple[dict, list[str]]]:
    ckpt = {"random_seed": None}
    return {
        "wrong_n_bins": (user_spec(code, config={"bin_size": 64}), ["declare.n_bins 16", "[2, 8, 8]"]),
        "needs_another_length": (user_spec(code, import_path=f"{MODULE}:NeedsLength"),
                                 ["declare.window_length 512", "takes 1024 bp, got 512"]),
        "wrong_channels": (user_spec(code, declare={**DECLARE, "tracks": []}), ["5 channels", "declare.alphabet 'ATCGN'"]),
        "non_finite": (user_spec(code, import_path=f"{MODULE}:NaNOut"), ["2 non-finite values"]),
        "tuple_output": (user_spec(code, import_path=f"{MODULE}:TupleOut"), ["returns a tuple"]),
        "not_symmetric": (user_spec(code, declare={**DECLARE, "symmetric": True}), ["declare.symmetric is true", "max |M - M^T|"]),
        "module_not_found": (user_spec(code, import_path="no_such_module_xyz.sub:Model"),
                             ["'no_such_module_xyz.sub:Model'", "No module named 'no_such_module_xyz'", "python_path"]),
        "import_raises": (user_spec(code, import_path=f"{BROKEN}:Model"), ["ImportError: needs the package foo"]),
        "attribute_missing": (user_spec(code, import_path=f"{MODULE}:Missing"), [f"'{MODULE}' has no attribute 'Missing'"]),
        "not_callable": (user_spec(code, import_path=f"{MODULE}:NOT_CALLABLE"), ["is a int, not a class or function"]),
        "factory_raises": (user_spec(code, import_path=f"{MODULE}:raising"), ["raised RuntimeError", "factory exploded"]),
        "config_typo": (user_spec(code, config={"hiden": 3}), ["raised TypeError", "'hiden'"]),
        "not_a_module": (user_spec(code, import_path=f"{MODULE}:not_a_module"), ["returned a int, not a torch.nn.Module"]),
        "shape_mismatch": (user_spec(code, **ckpt, checkpoint=str(code["wide.pt"])),
                           [f"(for {MODULE}:Tiny) does not fit", "conv.weight: checkpoint (8, 7, 5) vs model (4, 7, 5)"]),
        "prefix_not_stripped": (user_spec(code, **ckpt, checkpoint=str(code["wrapped.ckpt"])),
                                ["4 missing keys: conv.weight", "unexpected keys: net.conv.weight", "state_dict_prefix"]),
        "unsafe_pickle": (user_spec(code, **ckpt, checkpoint=str(code["unsafe.pt"])), ["refused to unpickle fractions.Fraction"]),
        "missing_file": (user_spec(code, **ckpt, checkpoint=str(code["folder"] / "absent.pt")), ["absent.pt: no such file"]),
        "torchscript_with_import_path": (user_spec(code, **ckpt, checkpoint=str(code["scripted.pt"])),
                                         ["is a TorchScript archive", "drop model.import_path"]),
        "state_dict_without_import_path": ({"kind": "user", "checkpoint": str(code["plain.pt"]), "declare": DECLARE},
                                           ["not a TorchScript archive", "give model.import_path"]),
    }


class _Placeholders(dict):
    """Any file name → a placeholder path: enough to list the case names at collection time."""

    def __missing__(self, key: str) -> Path:
        return Path(key)


CASES = list(refusal_cases(_Placeholders()))


@pytest.mark.parametrize("case", CASES)
def test_bad_model_is_refused_at_load(user_code, case):
    raw, fragments = refusal_cases(user_code)[case]
    with pytest.raises(ModelError) as caught:
        load(raw)
    for fragment in fragments:
        assert fragment in str(caught.value), f"{case}: {fragment!r} not in {caught.value}"


@pytest.mark.parametrize("change, message", [
    ({"declare": {**DECLARE, "map_offset": 64}}, "map_offset 64 + n_bins 16 x bin_size 32 = 576 bp) reaches beyond window_length 512"),
    ({"declare": {**DECLARE, "alphabet": "ACGT"}}, "give n_value"),
    ({"declare": {**DECLARE, "n_value": 0.25}}, "N has its own channel; drop n_value"),
    ({"declare": {**DECLARE, "alphabet": "ACGU"}}, "not a permutation of ACGT"),
    ({"declare": {**DECLARE, "tracks": ["ctcf", "ctcf"]}}, "tracks are listed twice"),
    ({"declare": {**DECLARE, "input_layout": "LNC"}}, "'NCL' or 'NLC'"),
    ({"declare": {k: v for k, v in DECLARE.items() if k != "n_bins"}}, "declare.n_bins"),
    ({"declare": None}, "kind user needs 'declare'"),
    ({"kind": "corigami"}, "['import_path', 'python_path', 'declare'] are only for kind: user"),
    ({"import_path": None}, "random_seed needs import_path"),
    ({"import_path": None, "random_seed": None, "checkpoint": "m.pt", "config": {"a": 1}}, "config and state_dict_prefix need import_path"),
    ({"import_path": "justamodule"}, "is not 'package.module:factory'"),
    ({"track_names": ["ctcf", "atac"]}, "declare.tracks, not track_names"),
])
def test_bad_declaration_is_a_spec_error(change, message):
    raw = user_spec({"folder": "/x"}, **change)
    with pytest.raises(ValidationError) as caught:
        ModelSpec.model_validate(raw)
    text = str(caught.value)
    assert message in text or message in text.replace("\n  ", "."), text


# --- through the CLI: exit 2, nothing written ------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("change, message", [
    ({"config": {"bin_size": 64}}, "declare.n_bins 16"),
    ({"import_path": "no_such_module_xyz:Model"}, "model.import_path 'no_such_module_xyz:Model'"),
    ({"declare": {**DECLARE, "map_offset": 64}}, "reaches beyond window_length 512"),
])
def test_cli_refuses_bad_user_model_before_any_store(user_code, toy_paths, tmp_path, capsys, command, change, message):
    raw = toy_spec_dict(toy_paths, tmp_path / "out.zarr", model=user_spec(user_code, **change))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    args = [command, str(spec)] + (["--no-progress"] if command == "run" else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("screening: error:") and message in err, err
    assert not (tmp_path / "out.zarr").exists()


# --- screens of a user model: engine directly, then the runner on Ray -----------------------------------------


def screen_spec(code: dict, toy_paths, store: Path):
    raw = toy_spec_dict(
        toy_paths, store,
        model=user_spec(code, random_seed=None, checkpoint=str(code["wrapped.ckpt"]), state_dict_prefix="net."),
        regions=["chr1:2,000-2,200"],
        perturbations=[
            {"kind": "deletion", "name": "del20", "width": 20, "step": 20},
            {"kind": "mutagenesis", "name": "ism", "regions": ["chr1:2,000-2,006"], "scores": ["impact_mean_abs"]},
            {"kind": "attribution", "name": "saliency", "regions": ["chr1:2,000-2,300"],
             "target": {"kind": "insulation", "window": 3}},
        ],
    )
    return parse_spec(raw)


def engine_results(spec) -> dict[str, dict[str, np.ndarray]]:
    """Every analysis of the spec computed unit by unit through the engine, as a worker does."""
    from screening.plan import plan_screen
    from screening.prepare import open_inputs

    adapter = load_model(spec.model, "cpu")
    genome, tracks = open_inputs(spec)
    plan = plan_screen(spec, spec.parsed_regions(), genome.chrom_sizes, adapter.geometry, genome)
    analyses = {p.label: p for p in spec.perturbations}
    out: dict[str, dict[str, list]] = {}
    for unit in plan.units:
        payload, analysis = plan.payload(unit), analyses[unit.analysis]
        if analysis.kind == "attribution":
            values = run_attribution(adapter, genome, tracks, analysis, unit.chrom, payload).values
        else:
            values = run_unit(adapter, genome, tracks, analysis, unit.chrom, payload, batch_size=3).values
        values = {**values, "start": payload["start"], "window_start": payload["window_start"]}
        for name, array in values.items():
            out.setdefault(unit.analysis, {}).setdefault(name, []).append(array)
    return {a: {k: np.concatenate(v) for k, v in d.items()} for a, d in out.items()}


@pytest.fixture(scope="module")
def screened(user_code, toy_paths, tmp_path_factory):
    spec = screen_spec(user_code, toy_paths, tmp_path_factory.mktemp("engine") / "unused.zarr")
    return spec, engine_results(spec)


def test_engine_deletion_scores_are_the_map_differences(user_code, toy_paths, screened):
    _, results = screened
    deletion = results["del20"]
    assert np.array_equal(deletion["start"], np.arange(2_000, 2_200, 20))
    genome = Genome(toy_paths["fasta"])
    tracks = TrackSet([Track(toy_paths["ctcf"], "ctcf"), Track(toy_paths["atac"], "atac", "log1p")])
    i = 3
    start, ws = int(deletion["start"][i]), int(deletion["window_start"][i])
    codes, values = genome.fetch("chr1", ws, ws + 512), tracks.fetch("chr1", ws, ws + 512)
    off = start - ws
    deleted = np.concatenate([codes[:off], codes[off + 20 :], np.full(20, N_CODE, np.uint8)])
    deleted_tracks = np.concatenate([values[:, :off], values[:, off + 20 :], np.zeros((2, 20), np.float32)], axis=1)
    ref = direct(user_code["model"], codes[None], values[None])[0]
    alt = direct(user_code["model"], deleted[None], deleted_tracks[None])[0]
    np.testing.assert_allclose(deletion["impact_mean_abs"][i], np.abs(alt - ref).mean(), rtol=1e-5)
    np.testing.assert_allclose(deletion["impact_abs_mean"][i], abs((alt - ref).mean()), rtol=1e-4, atol=1e-8)


def test_engine_mutagenesis_and_saliency_of_a_user_model(user_code, toy_paths, screened):
    from screening.maps.targets import make_target

    _, results = screened
    genome = Genome(toy_paths["fasta"])
    ism = results["ism"]["impact_mean_abs"]
    reference = genome.fetch("chr1", 2_000, 2_006)
    assert ism.shape == (6, 4) and np.isnan(ism[np.arange(6), reference]).all() and np.isfinite(ism).sum() == 18
    saliency = results["saliency"]
    assert saliency["attribution"].shape == (300, 4) and np.isfinite(saliency["attribution"]).all()
    # one window's saliency equals the input gradient of the insulation at the centre bin, by hand
    tracks = TrackSet([Track(toy_paths["ctcf"], "ctcf"), Track(toy_paths["atac"], "atac", "log1p")])
    ws = int(saliency["window_start"][0])
    owned = saliency["window_start"] == ws
    codes, values = genome.fetch("chr1", ws, ws + 512), tracks.fetch("chr1", ws, ws + 512)
    one_hot = (codes[:, None] == np.array([0, 3, 1, 2, 4])).astype(np.float32)
    x = torch.from_numpy(np.concatenate([one_hot, values.T], axis=1)[None]).requires_grad_(True)
    make_target("insulation", bin=8, window=3)(user_code["model"](x)).sum().backward()
    gradient = x.grad[0].numpy()[:, [0, 2, 3, 1]]  # A T C G channels → A C G T
    offsets = saliency["start"][owned] - ws
    np.testing.assert_allclose(saliency["attribution"][owned], gradient[offsets], rtol=1e-4, atol=1e-8)


def test_runner_screens_user_model_on_ray_workers(ray_session, user_code, toy_paths, tmp_path, screened):
    """One full run: the Ray workers import the user's module from model.python_path and load its checkpoint."""
    from screening import open_results
    from workers.driver import run_screen

    spec = screen_spec(user_code, toy_paths, tmp_path / "out.zarr")
    _, expected = screened
    summary = run_screen(spec, progress=False)
    assert summary.n_computed == summary.n_perturbations > 0
    results = open_results(tmp_path / "out.zarr")
    assert results.provenance["model"]["name"] == f"user:{MODULE}:Tiny:wrapped.ckpt"
    for analysis, score in (("del20", "impact_mean_abs"), ("ism", "impact_mean_abs"), ("saliency", "attribution")):
        ds = results.query("chr1:2,000-2,300", analysis).compute()
        np.testing.assert_allclose(ds[score].values, expected[analysis][score], rtol=1e-4, atol=1e-7, err_msg=analysis)

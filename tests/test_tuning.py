"""Worker throughput settings: the CPU allocator tuning, channels-last and torch.compile leave results unchanged."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from screening.models.corigami import CorigamiAdapter, CorigamiConfig
from screening.compute.threads import optimize_adapter

from helpers import TOY_CONFIG


def toy_batch(adapter, batch=3, seed=1):
    rng = np.random.default_rng(seed)
    window = adapter.geometry.window_length
    codes = rng.integers(0, 5, (batch, window), dtype=np.uint8)
    tracks = rng.gamma(1.0, 1.0, (batch, 2, window)).astype(np.float32)
    return codes, tracks


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_allocator_tuning_takes_effect_and_predictions_still_run():
    # in a child process: the setting is process-wide
    code = (
        "import numpy as np; from screening.compute.threads import tune_cpu_allocator; "
        "from screening.models.corigami import CorigamiAdapter, CorigamiConfig; "
        "assert tune_cpu_allocator() is True; "
        f"a = CorigamiAdapter.random_init(CorigamiConfig(**{TOY_CONFIG!r})); "
        "m = a.predict(np.zeros((2, 512), np.uint8), np.zeros((2, 2, 512), np.float32)); "
        "assert m.shape == (2, 16, 16) and np.isfinite(m).all(); print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_channels_last_leaves_cpu_results_unchanged(one_thread):
    plain = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0)
    nhwc = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0)
    assert optimize_adapter(nhwc, channels_last=True) == {"channels_last": True, "compile": False}
    conv = nhwc.module.decoder.conv_start[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    codes, tracks = toy_batch(plain)
    expected = plain.predict(codes, tracks)
    got = nhwc.predict(codes, tracks)
    assert got.shape == expected.shape == (3, 16, 16)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_nothing_applied_by_default():
    adapter = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0)
    module = adapter.module
    assert optimize_adapter(adapter) == {"channels_last": False, "compile": False}
    assert adapter.module is module


def test_execution_options_default_off():
    from screening.spec import ExecutionSpec, SpecError, parse_spec

    assert ExecutionSpec().channels_last is False and ExecutionSpec().compile is False
    assert ExecutionSpec().keep_freed_memory is True  # CPU workers tune their allocator unless told not to
    raw = {"model": {"random_seed": 0}, "genome": {"fasta": "/g.fa"}, "regions": ["chr1:0-10"],
           "perturbations": [{"kind": "mutagenesis"}], "output": {"store": "/x.zarr"}}
    base = parse_spec(raw)
    fast = parse_spec({**raw, "execution": {"channels_last": True, "compile": True}})
    assert fast.execution.channels_last and fast.science_hash() == base.science_hash()  # not part of the science
    with pytest.raises(SpecError, match="channels_last"):
        parse_spec({**raw, "execution": {"channels_last": "sometimes"}})


@pytest.mark.slow
def test_compiled_model_gives_the_same_maps(one_thread):
    plain = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0)
    compiled = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0)
    optimize_adapter(compiled, compile=True)
    codes, tracks = toy_batch(plain)
    np.testing.assert_allclose(compiled.predict(codes, tracks), plain.predict(codes, tracks), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_bf16_channels_last_close_to_fp32_cpu(channels_last):
    """On a GPU: the fast path (bf16 autocast, optionally NHWC) stays close to the fp32 CPU maps."""
    cpu = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0)
    gpu = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0, device="cuda")
    optimize_adapter(gpu, channels_last=channels_last)
    codes, tracks = toy_batch(cpu)
    expected = cpu.predict(codes, tracks)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = gpu.predict(codes, tracks)
    np.testing.assert_allclose(got, expected, atol=0.05 * np.abs(expected).max())


@pytest.mark.parametrize("keep", [True, False])
def test_worker_applies_the_execution_settings(toy_paths, tmp_path, monkeypatch, keep, one_thread):
    from helpers import toy_spec_dict
    from workers.screen_worker import ScreenWorker

    calls = []
    monkeypatch.setattr("screening.prepare.tune_cpu_allocator", lambda: calls.append(1) or True)
    execution = {"device": "cpu", "keep_freed_memory": keep, "channels_last": True}
    worker = ScreenWorker(toy_spec_dict(toy_paths, tmp_path / "s.zarr", execution=execution))
    assert calls == ([1] if keep else [])
    assert worker.adapter.module.decoder.conv_start[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_cpu_workers_start_with_the_allocator_settings(ray_session):
    """The allocator settings reach a CPU worker through its environment, in force before its first thread."""
    import os

    import ray

    from screening.spec import ExecutionSpec
    from workers.driver import worker_options

    cpu = worker_options(ExecutionSpec(cpus_per_worker=1.0))
    assert cpu["runtime_env"]["env_vars"]["MALLOC_ARENA_MAX"] == "1"
    assert "runtime_env" not in worker_options(ExecutionSpec(keep_freed_memory=False))
    assert "runtime_env" not in worker_options(ExecutionSpec(gpus_per_worker=1.0))

    @ray.remote
    class Environment:
        def get(self, name: str) -> str | None:
            return os.environ.get(name)

    actor = Environment.options(num_cpus=cpu["num_cpus"], runtime_env=cpu["runtime_env"]).remote()
    try:
        assert ray.get(actor.get.remote("MALLOC_ARENA_MAX"), timeout=120) == "1"
        assert ray.get(actor.get.remote("MALLOC_TRIM_THRESHOLD_")) == str(1 << 30)
    finally:
        ray.kill(actor)

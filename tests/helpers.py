"""Helpers and constants shared by several test modules (fixtures live in conftest.py).

Imported as ``from helpers import ...``: pytest puts this folder on ``sys.path`` (rootdir-relative
``prepend`` import mode, no ``__init__.py`` here).
"""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path
from typing import Iterator

import torch


class FileWriter(torch.nn.Module):
    """A TorchScript model whose forward overwrites ``target`` through ``torch.from_file``."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x):
        written = torch.from_file(self.target, shared=True, size=4, dtype=torch.uint8)
        written.fill_(66)
        return x


def write_file_writer(path, target) -> None:
    torch.jit.script(FileWriter(str(target))).save(str(path))


# --- toy inputs shared by engine, worker, runner and CLI tests -------------------------------

#: A tiny C.Origami-architecture configuration: 4 encoder blocks (bins of 32 bp), 16 bins, 512 bp window.
TOY_CONFIG = {
    "mid_hidden": 16,
    "stem_width": 4,
    "block_widths": [4, 4, 8, 8],
    "n_layers": 1,
    "n_heads": 2,
    "ff_hidden": 16,
    "decoder_hidden": 8,
    "decoder_blocks": 2,
    "window_length": 512,
}


def write_toy_genome(directory: Path, sizes: dict[str, int] | None = None, seed: int = 3) -> dict[str, Path]:
    """A random FASTA and CTCF/ATAC bigWigs (50 bp steps) over the same chromosomes."""
    import numpy as np
    import pyBigWig

    sizes = sizes or {"chr1": 6_000, "chr2": 3_000}
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    fasta = directory / "toy.fa"
    with fasta.open("w") as handle:
        for chrom, size in sizes.items():
            seq = "".join(rng.choice(list("ACGT"), size))
            handle.write(f">{chrom}\n" + "\n".join(seq[i : i + 60] for i in range(0, size, 60)) + "\n")
    paths = {"fasta": fasta}
    for name in ("ctcf", "atac"):
        path = directory / f"{name}.bw"
        bw = pyBigWig.open(str(path), "w")
        bw.addHeader(list(sizes.items()))
        for chrom, size in sizes.items():
            starts = list(range(0, size, 50))
            values = rng.gamma(1.0, 2.0, len(starts)).astype(float).tolist()
            bw.addEntries([chrom] * len(starts), starts, ends=[s + 50 for s in starts], values=values)
        bw.close()
        paths[name] = path
    return paths


class FakeRemote:
    """``actor.method.remote(*args)`` of a Ray actor handle, answered by a plain function (for the service's job
    manager in tests that run the API without Ray)."""

    def __init__(self, answer) -> None:
        self.answer = answer

    def remote(self, *args):
        async def call():
            return self.answer(*args)

        return call()


def tiny_corigami_config():
    """A C.Origami small enough to train in seconds: 8 encoder blocks (512 bp bins, so an 8,192 bp window is a
    16-bin map); kernel 11 and 8 channels in the first layers leave room for the built-in motif channels."""
    from screening.models.corigami import CorigamiConfig

    return CorigamiConfig(mid_hidden=8, stem_width=8, kernel_size=11, block_widths=(8,) + (4,) * 7, n_layers=1,
                          n_heads=2, ff_hidden=8, dropout=0.0, decoder_hidden=4, decoder_blocks=2, window_length=8192)


def group_layout(start, scores, chunk_size: int, chrom_length: int, width: int = 1, analysis: str = "del",
                 kind: str = "deletion", **changes):
    """A :class:`~screening.store.layout.GroupLayout` on chr1: intervals ``[start, start + width)``, windows at 0
    (or ``changes["window_start"]``); per-base kinds pass ``extra_dims={"base": 4}``."""
    import numpy as np

    from screening.store.layout import GroupLayout

    start = np.asarray(start, dtype=np.int64)
    fields = dict(chrom="chr1", chrom_length=chrom_length, analysis=analysis, kind=kind, params={}, start=start,
                  end=start + width, window_start=np.zeros_like(start), scores=list(scores), chunk_size=chunk_size)
    return GroupLayout(**{**fields, **changes})


def toy_spec_dict(paths: dict[str, Path], store: Path, **changes) -> dict:
    """A spec over the toy genome with the toy model (random weights, seed 0)."""
    spec = {
        "name": "toy",
        "model": {"kind": "corigami", "random_seed": 0, "config": TOY_CONFIG},
        "genome": {"fasta": str(paths["fasta"]), "name": "toy"},
        "tracks": [
            {"name": "ctcf", "path": str(paths["ctcf"]), "transform": "none"},
            {"name": "atac", "path": str(paths["atac"]), "transform": "log1p"},
        ],
        "regions": ["chr1:2,000-2,400", "chr2:1,000-1,200"],
        "perturbations": [{"kind": "deletion", "name": "del20", "width": 20, "step": 20}],
        "execution": {"num_workers": 1, "batch_size": 4, "chunk_size": 4, "device": "cpu"},
        "output": {"store": str(store)},
    }
    spec.update(changes)
    return spec


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a server a test starts later.

    Chosen below the kernel's ephemeral range and above Ray's worker ports (10002-19999): a port
    the kernel hands out (bind to port 0) can be taken again by any of the dozens of sockets Ray
    opens on ephemeral ports before the test's server binds it ("Failed to bind", seen on CI).
    """
    port_range = Path("/proc/sys/net/ipv4/ip_local_port_range")
    first_ephemeral = int(port_range.read_text().split()[0]) if port_range.exists() else 32768
    candidates = list(range(20_000, max(first_ephemeral, 20_100)))
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port between 20000 and the ephemeral range")


#: Folder of test-only user models (``python_path`` of ``slow_model_section``).
TEST_MODELS = Path(__file__).resolve().parent / "models"


def slow_model_section(delay_s: float) -> dict:
    """``model`` section of a tiny user model whose forward takes at least ``delay_s`` s.

    The same seed gives the same weights and maps at any delay; fault-tolerance tests use it
    so that units last long enough to be interrupted mid-way on any machine.
    """
    return {
        "kind": "user",
        "import_path": "screening_slow_model:SlowContactModel",
        "python_path": [str(TEST_MODELS)],
        "config": {"delay_s": delay_s, "n_tracks": 2, "bin_size": 32, "hidden": 4},
        "random_seed": 0,
        "declare": {"window_length": 512, "bin_size": 32, "n_bins": 16, "input_layout": "NCL", "alphabet": "ACGT",
                    "n_value": 0.25, "tracks": ["ctcf", "atac"], "symmetric": True},
    }


# --------------------------------------------------------------------------- Prometheus naming rules

#: Base units (the values) of the unit words promtool recognises in a name (its promlint rules).
_PROM_UNITS = {
    "amperes": "amperes", "bytes": "bytes", "celsius": "celsius", "grams": "grams", "joules": "joules",
    "kelvin": "kelvin", "meters": "meters", "metres": "metres", "seconds": "seconds", "volts": "volts",
    "minutes": "seconds", "hours": "seconds", "days": "seconds", "weeks": "seconds", "kelvins": "kelvin",
    "fahrenheit": "celsius", "rankine": "celsius", "inches": "meters", "yards": "meters", "miles": "meters",
    "bits": "bytes", "calories": "joules", "pounds": "grams", "ounces": "grams",
}
_PROM_UNIT_PREFIXES = ("pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo", "kibi", "mega",
                       "mibi", "giga", "gibi", "tera", "tebi", "peta", "pebi")
_PROM_UNIT_ABBREVIATIONS = ("s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d")
_PROM_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
#: Sample suffixes a family of each type may expose beside its own name.
_PROM_SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}


def prometheus_naming_problems(text: str) -> list[str]:
    """What is wrong with a Prometheus text exposition (``[]`` when nothing is).

    The rules of ``promtool check metrics`` (client_golang's promlint: ``_total`` on counters and only
    on counters, ``_bucket``/``_count``/``_sum`` only on histograms and summaries, base units,
    no abbreviated units, no type or ``:`` or camelCase in names, help text on every family), plus
    the exposition format's: valid metric and label names, at most one HELP and one TYPE per family,
    every sample in a declared family, and a text that ``prometheus_client``'s parser reads.
    """
    import re

    from prometheus_client.parser import text_string_to_metric_families

    name_re = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
    label_re = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
    camel = re.compile(r"[a-z][A-Z]")
    problems: list[str] = []
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            continue
        parts = line.split(None, 3)
        if len(parts) < 3 or parts[1] not in ("HELP", "TYPE"):
            continue
        name = parts[2]
        if parts[1] == "HELP":
            if name in helps:
                problems.append(f"{name}: second HELP line")
            helps[name] = parts[3].strip() if len(parts) > 3 else ""
        else:
            kind = parts[3].strip() if len(parts) > 3 else ""
            if name in types:
                problems.append(f"{name}: second TYPE line")
            if kind not in _PROM_TYPES:
                problems.append(f"{name}: unknown type {kind!r}")
            types[name] = kind
    for name, kind in types.items():
        lower = name.lower()
        words = lower.split("_")
        if not name_re.match(name):
            problems.append(f"{name}: not a valid metric name")
        if ":" in name:
            problems.append(f"{name}: metric names should not contain ':'")
        if camel.search(name):
            problems.append(f"{name}: metric names should be written in 'snake_case' not 'camelCase'")
        if not helps.get(name):
            problems.append(f"{name}: no help text")
        if kind == "counter" and not name.endswith("_total"):
            problems.append(f'{name}: counter metrics should have "_total" suffix')
        if kind not in ("counter", "untyped") and name.endswith("_total"):
            problems.append(f'{name}: non-counter metrics should not have "_total" suffix')
        if kind not in ("histogram", "untyped") and name.endswith("_bucket"):
            problems.append(f'{name}: non-histogram metrics should not have "_bucket" suffix')
        for suffix in ("_count", "_sum"):
            if kind not in ("histogram", "summary", "untyped") and name.endswith(suffix):
                problems.append(f'{name}: non-histogram and non-summary metrics should not have "{suffix}" suffix')
        if kind not in ("gauge", "untyped") and name.endswith("_timestamp_seconds"):
            problems.append(f'{name}: non-gauge metrics should not have "_timestamp_seconds" suffix')
        for typename in _PROM_TYPES[:-1]:
            if f"_{typename}_" in lower or lower.endswith(f"_{typename}"):
                problems.append(f"{name}: metric name should not include type '{typename}'")
        for word in words:
            prefixes = [p for p in _PROM_UNIT_PREFIXES if word.startswith(p) and word[len(p):] in _PROM_UNITS]
            unit = word if word in _PROM_UNITS else (word[len(prefixes[0]):] if prefixes else None)
            if unit is not None:
                if word != _PROM_UNITS[unit]:
                    problems.append(f"{name}: use base unit {_PROM_UNITS[unit]!r} instead of {word!r}")
                break
        if any(abbreviation in words[1:] for abbreviation in _PROM_UNIT_ABBREVIATIONS):
            problems.append(f"{name}: metric names should not contain abbreviated units")
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as err:  # noqa: BLE001 - any parse failure is a problem to report
        return [*problems, f"the text does not parse: {err}"]
    for family in families:
        for sample in family.samples:
            declared = sample.name if sample.name in types else next(
                (sample.name[: -len(s)] for s in (*_PROM_SUFFIXES["histogram"], "_created")
                 if sample.name.endswith(s) and sample.name[: -len(s)] in types), None)
            kind = types.get(declared) if declared else None
            if kind is None:
                problems.append(f"{sample.name}: a sample of no declared family (no TYPE line)")
                continue
            if declared != sample.name and not sample.name.endswith(_PROM_SUFFIXES.get(kind, ("\0",))):
                problems.append(f"{sample.name}: a {kind} family {declared} cannot have this sample")
            for label in sample.labels:
                if not label_re.match(label) or label.startswith("__"):
                    problems.append(f"{sample.name}: invalid label name {label!r}")
                if camel.search(label):
                    problems.append(f"{sample.name}: label names should be written in 'snake_case' not 'camelCase'")
                if label == "le" and kind != "histogram":
                    problems.append(f'{sample.name}: non-histogram metrics should not have "le" label')
                if label == "quantile" and kind != "summary":
                    problems.append(f'{sample.name}: non-summary metrics should not have "quantile" label')
    return sorted(set(problems), key=problems.index)


def promtool_problems(text: str) -> list[str] | None:
    """``promtool check metrics`` on a scrape: its complaints (``[]`` when it passes), or None without promtool."""
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        return None
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    said = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return said if done.returncode or said else []


# --- Ray ---------------------------------------------------------------------------------------------

#: How the tests start a local Ray: the shared session one (conftest's ``ray_session``) and, with changes,
#: the separate clusters of :func:`separate_ray`. ``local`` never joins a cluster started with ``ray start``.
RAY_OPTIONS = {"address": "local", "num_cpus": 2, "include_dashboard": False, "logging_level": "ERROR",
               "log_to_driver": False}


@contextlib.contextmanager
def separate_ray(**changes) -> Iterator[None]:
    """A local Ray of its own (``RAY_OPTIONS`` with ``changes``) for the block, shut down after it.

    For tests that cannot share the session Ray: other resources, environment variables its worker
    processes must inherit (they inherit the raylet's, fixed when Ray starts), the dashboard, Serve and
    its detached actors. One process holds one Ray, so the session one is shut down first; conftest
    starts it again for the next test that asks for ``ray_session``.
    """
    import ray

    ray.shutdown()
    ray.init(**{**RAY_OPTIONS, **changes})
    try:
        yield
    finally:
        ray.shutdown()


def count_s3_calls(monkeypatch):
    """Every S3 API call s3fs makes from now on, by operation name (one per HTTP request, retries aside)."""
    from collections import Counter

    import s3fs

    calls: Counter = Counter()
    original = s3fs.S3FileSystem._call_s3

    async def counting(self, method, *args, **kwargs):
        calls[method] += 1
        return await original(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counting)
    return calls

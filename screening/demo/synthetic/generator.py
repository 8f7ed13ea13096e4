"""Synthetic genome with planted CTCF ground truth, for scoring screens (AUROC/AUPR).

:func:`generate` writes, into one folder::

    genome.fa, genome.fa.fai   random background (GC-controlled), motifs planted
    ctcf.bw, atac.bw           peaks at functional sites and decoys, noise elsewhere
    truth.bed                  BED6 + role, strength: every planted feature
    contacts/<chrom>.npy       float32 [n, n] log(1 + contacts), whole chromosome
    config.json                the config, contact parameters and counts

Three kinds of feature are planted so that neither input alone suffices:
``ctcf_site`` (motif + peak; shapes the map), ``decoy_peak`` (peak, no motif;
no effect) and ``motif_only`` (motif, no peak; no effect). Difficulty knobs, all
off by default (the default genome is unchanged), grade the truth for method
benchmarks: weak motif instances, redundant twins, an orientation rule (sites
without a convergent partner have no effect: ``unpaired_site``) and GC-rich
stretches without function (``gc_stretch``); see ``docs/synthetic.md``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from screening.core.encode import decode
from screening.demo.synthetic.contacts import (
    ALL_ROLES,
    ROLES,
    ContactParams,
    Site,
    boundary_strengths,
    contact_map,
    convergent_pairs,
)
from screening.perturb.motif import Motif, load_ctcf, sample_motif, scan

__all__ = [
    "FORMAT_VERSION",
    "SyntheticConfig",
    "SyntheticGenome",
    "generate",
    "graded_config",
    "read_truth",
    "stratum_of",
]

FORMAT_VERSION = 2  # 2: truth.bed gains stratum, effect and group columns (readers of 8 columns still work)
_FASTA_WIDTH = 60
# Independent random streams per chromosome, so adding one leaves the others unchanged; the
# difficulty knobs draw from their own stream, so with the knobs off the genome is that of version 1.
_STREAM_LAYOUT, _STREAM_SEQUENCE, _STREAM_TRACKS, _STREAM_CONTACTS, _STREAM_GRADES = range(5)
_LAYOUT_ROLES = ROLES + ("gc_stretch",)


@dataclass
class SyntheticConfig:
    """What to plant and how to render it. Sizes in bp; rates per Mb.

    Attributes
    ----------
    seed
        Seeds every random draw: same config, same files.
    chromosomes
        ``(name, length)`` pairs.
    sites_per_mb, decoy_peaks_per_mb, motif_only_per_mb
        Densities of functional sites (motif + peak), peaks without motif and
        motifs without peak; counts are ``round(rate · length / 1e6)``.
    plus_fraction
        Fraction of motif-bearing features on the ``+`` strand.
    gc
        Background GC fraction.
    min_spacing
        Least distance between the centres of any two planted features.
    strength_range
        Uniform range of a feature's strength ``h`` (peak height and, for functional
        sites, boundary/loop strength).
    motif_min_relscore
        Planted motifs are redrawn until their relative PWM score reaches this.
    background_max_relscore
        Chance motif matches in the background at or above this are mutated away,
        so the truth lists every strong motif.
    track_resolution
        bigWig bin size.
    ctcf_peak_height, atac_peak_height
        Peak height at ``h = 1`` (before per-peak log-normal jitter).
    ctcf_peak_sd, atac_peak_sd
        Gaussian peak widths (s.d.).
    peak_jitter_bp
        s.d. of the summit's offset from the feature centre.
    height_noise
        s.d. of the per-peak log-normal height jitter.
    ctcf_background, atac_background
        Mean of the gamma-distributed background signal.
    contact_bin_size
        Bin size of the written contact maps.
    contact
        Parameters of the contact model.
    weak_fraction
        Fraction of functional sites planted weak: a motif of relative score in
        ``weak_relscore_range`` (below the strong ones, among chance matches of the
        background) and strength times ``weak_strength_scale``; stratum ``weak``.
    weak_relscore_range, weak_strength_scale
        See ``weak_fraction``.
    redundant_fraction
        Fraction of the other functional sites given a twin ``redundant_offset_bp``
        downstream (same motif strand and strength, no extra peak); the pair acts as one
        boundary, so either alone is masked by the other; both are stratum ``redundant``.
    redundant_offset_bp
        Distance between a site and its twin.
    orientation_rule
        Only sites in a convergent pair act: a functional site left without a partner
        (``contact.min_pair_weight``, ``max_loop_bp``) becomes ``unpaired_site`` (motif
        and peak, no effect).
    gc_stretches_per_mb, gc_stretch_length, gc_stretch_gc
        GC-rich background stretches without function (no motif, no peak), role
        ``gc_stretch``, laid out like the other features.
    """

    seed: int = 0
    chromosomes: list[tuple[str, int]] = field(default_factory=lambda: [("chr1", 2_000_000), ("chr2", 1_000_000)])
    sites_per_mb: float = 20.0
    decoy_peaks_per_mb: float = 8.0
    motif_only_per_mb: float = 8.0
    plus_fraction: float = 0.5
    gc: float = 0.41
    min_spacing: int = 5_000
    strength_range: tuple[float, float] = (0.5, 1.0)
    motif_min_relscore: float = 0.85
    background_max_relscore: float = 0.78
    track_resolution: int = 50
    ctcf_peak_height: float = 12.0
    atac_peak_height: float = 4.0
    ctcf_peak_sd: float = 100.0
    atac_peak_sd: float = 150.0
    peak_jitter_bp: float = 20.0
    height_noise: float = 0.25
    ctcf_background: float = 0.5
    atac_background: float = 0.4
    contact_bin_size: int = 1024
    contact: ContactParams = field(default_factory=ContactParams)
    weak_fraction: float = 0.0
    weak_relscore_range: tuple[float, float] = (0.70, 0.80)
    weak_strength_scale: float = 0.5
    redundant_fraction: float = 0.0
    redundant_offset_bp: int = 300
    orientation_rule: bool = False
    gc_stretches_per_mb: float = 0.0
    gc_stretch_length: int = 500
    gc_stretch_gc: float = 0.7

    def counts(self, length: int) -> dict[str, int]:
        """Number of features of each laid-out role on a chromosome of ``length`` bp (before the knobs)."""
        rates = (self.sites_per_mb, self.decoy_peaks_per_mb, self.motif_only_per_mb, self.gc_stretches_per_mb)
        return {role: int(round(rate * length / 1e6)) for role, rate in zip(_LAYOUT_ROLES, rates)}

    def validate(self, motif_width: int = 19) -> None:
        """Raise ``ValueError`` naming the first problem; checks that every chromosome fits its sites."""
        _check_chromosomes(self.chromosomes)
        for name in (
            "sites_per_mb",
            "decoy_peaks_per_mb",
            "motif_only_per_mb",
            "ctcf_peak_height",
            "atac_peak_height",
            "peak_jitter_bp",
            "height_noise",
            "ctcf_background",
            "atac_background",
        ):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        for name in ("plus_fraction", "motif_min_relscore", "background_max_relscore"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.gc < 1.0:
            raise ValueError(f"gc must lie strictly between 0 and 1, got {self.gc}")
        low, high = self.strength_range
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"strength_range must satisfy 0 < low <= high <= 1, got {self.strength_range}")
        if self.background_max_relscore >= self.motif_min_relscore:
            raise ValueError(
                "background_max_relscore must be below motif_min_relscore, "
                f"got {self.background_max_relscore} >= {self.motif_min_relscore}"
            )
        for name in ("min_spacing", "track_resolution", "contact_bin_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be a whole number of bp, got {value!r}")
        for name in ("track_resolution", "contact_bin_size", "ctcf_peak_sd", "atac_peak_sd"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.min_spacing < motif_width:
            raise ValueError(
                f"min_spacing ({self.min_spacing} bp) must be at least the motif width "
                f"({motif_width} bp) so planted features cannot overlap"
            )
        self._validate_knobs(motif_width)
        for name, length in self.chromosomes:
            _check_fits(name, length, sum(self.counts(length).values()), self.min_spacing, motif_width)

    def _validate_knobs(self, motif_width: int) -> None:
        for name in ("weak_fraction", "redundant_fraction", "weak_strength_scale", "gc_stretch_gc"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1], got {getattr(self, name)}")
        if not self.gc_stretches_per_mb >= 0:
            raise ValueError(f"gc_stretches_per_mb must be non-negative, got {self.gc_stretches_per_mb}")
        low, high = self.weak_relscore_range
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"weak_relscore_range must satisfy 0 <= low < high <= 1, got {self.weak_relscore_range}")
        half = self.min_spacing // 2
        if self.redundant_fraction > 0 and not motif_width <= self.redundant_offset_bp <= half - motif_width:
            raise ValueError(
                f"redundant_offset_bp must lie in [{motif_width}, {half - motif_width}] (motif width to "
                f"half min_spacing less a motif), got {self.redundant_offset_bp}"
            )
        if self.gc_stretches_per_mb > 0 and not 0 < self.gc_stretch_length <= half:
            raise ValueError(
                f"gc_stretch_length must lie in (0, {half}] (half min_spacing), got {self.gc_stretch_length}"
            )

    def to_dict(self) -> dict:
        """JSON-ready dict (round-trips through :meth:`from_dict`)."""
        data = asdict(self)
        data["chromosomes"] = [[name, length] for name, length in self.chromosomes]
        data["strength_range"] = list(self.strength_range)
        data["weak_relscore_range"] = list(self.weak_relscore_range)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> SyntheticConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SyntheticConfig fields: {', '.join(unknown)}")
        data = dict(data)
        if "chromosomes" in data:
            data["chromosomes"] = [(str(n), int(length)) for n, length in data["chromosomes"]]
        for name in ("strength_range", "weak_relscore_range"):
            if name in data:
                data[name] = tuple(data[name])
        if isinstance(data.get("contact"), dict):
            data["contact"] = ContactParams(**data["contact"])
        return cls(**data)


def _check_chromosomes(chromosomes: list[tuple[str, int]]) -> None:
    if not chromosomes:
        raise ValueError("chromosomes is empty: give at least one (name, length)")
    names = [name for name, _ in chromosomes]
    if len(set(names)) != len(names):
        raise ValueError(f"chromosome names must be unique, got {names}")
    for name, length in chromosomes:
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ValueError(f"chromosome name {name!r} must be a non-empty string without whitespace")
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length <= 0:
            raise ValueError(f"chromosome {name}: length must be a positive integer, got {length!r}")


def _check_fits(name: str, length: int, n_features: int, min_spacing: int, motif_width: int) -> None:
    needed = _margin(min_spacing, motif_width) * 2 + max(n_features - 1, 0) * min_spacing
    if n_features and needed > length:
        raise ValueError(
            f"chromosome {name} ({length:,} bp) cannot hold {n_features} planted features at "
            f"min_spacing {min_spacing:,} bp: needs at least {needed:,} bp; lower the densities or min_spacing"
        )


def _margin(min_spacing: int, motif_width: int) -> int:
    # Keep features half a spacing from the ends so peaks and motifs never leave the chromosome.
    return max(min_spacing // 2, motif_width)


@dataclass
class SyntheticGenome:
    """Paths and truth of a generated genome.

    Attributes
    ----------
    root
        Output folder.
    config
        The config used.
    chrom_sizes
        ``{name: length}``.
    sites
        Every planted feature, sorted by chromosome order then position.
    """

    root: Path
    config: SyntheticConfig
    chrom_sizes: dict[str, int]
    sites: list[Site]

    @property
    def fasta(self) -> Path:
        return self.root / "genome.fa"

    @property
    def ctcf_bigwig(self) -> Path:
        return self.root / "ctcf.bw"

    @property
    def atac_bigwig(self) -> Path:
        return self.root / "atac.bw"

    @property
    def truth_bed(self) -> Path:
        return self.root / "truth.bed"

    @property
    def config_json(self) -> Path:
        return self.root / "config.json"

    def contacts_path(self, chrom: str) -> Path:
        return self.root / "contacts" / f"{chrom}.npy"

    def contacts(self, chrom: str, mmap: bool = True) -> np.ndarray:
        """Whole-chromosome target map ``float32 [n, n]`` at ``config.contact_bin_size`` (memory-mapped)."""
        return np.load(self.contacts_path(chrom), mmap_mode="r" if mmap else None)

    def sites_on(self, chrom: str, role: str | None = None) -> list[Site]:
        """Planted features of one chromosome, optionally of one role."""
        return [s for s in self.sites if s.chrom == chrom and (role is None or s.role == role)]

    @classmethod
    def open(cls, root: str | Path) -> SyntheticGenome:
        """Reopen a folder written by :func:`generate`."""
        root = Path(root)
        meta = json.loads((root / "config.json").read_text())
        config = SyntheticConfig.from_dict(meta["config"])
        return cls(root, config, dict(config.chromosomes), read_truth(root / "truth.bed"))


# ---------------------------------------------------------------- layout


def _layout(rng: np.random.Generator, chrom: str, length: int, config: SyntheticConfig, motif_width: int) -> list[Site]:
    """Place features uniformly subject to ``min_spacing``, then deal out roles, strands and strengths."""
    counts = config.counts(length)
    total = sum(counts.values())
    if total == 0:
        return []
    margin = _margin(config.min_spacing, motif_width)
    slack = length - 2 * margin - (total - 1) * config.min_spacing
    # Sorted uniform draws in the slack, then the spacing re-added: uniform over valid layouts.
    centers = np.sort(rng.integers(0, slack + 1, total)) + np.arange(total) * config.min_spacing + margin
    roles = rng.permutation(np.repeat(np.array(_LAYOUT_ROLES), [counts[r] for r in _LAYOUT_ROLES]))
    low, high = config.strength_range
    sites = []
    numbers = dict.fromkeys(_LAYOUT_ROLES, 0)
    for center, role in zip(centers.tolist(), roles.tolist()):
        numbers[role] += 1
        name = f"{role}_{chrom}_{numbers[role]:04d}"
        if role == "gc_stretch":  # no strand, strength or motif: nothing drawn, so the other draws stay as before
            start = center - config.gc_stretch_length // 2
            sites.append(Site(chrom, start, start + config.gc_stretch_length, name, 0.0, ".", role))
            continue
        strand = "." if role == "decoy_peak" else ("+" if rng.random() < config.plus_fraction else "-")
        strength = 0.0 if role == "motif_only" else float(np.round(rng.uniform(low, high), 4))
        start = center - motif_width // 2
        sites.append(Site(chrom, start, start + motif_width, name, strength, strand, role))
    return sites


def _grade(rng: np.random.Generator, sites: list[Site], config: SyntheticConfig) -> list[Site]:
    """Apply the difficulty knobs to a layout: weak sites, redundant twins, the orientation rule, effects."""
    graded: list[Site] = []
    for site in sites:
        if site.role != "ctcf_site" or (config.weak_fraction == 0 and config.redundant_fraction == 0):
            graded.append(site)
            continue
        draw = rng.random()
        if draw < config.weak_fraction:
            strength = float(np.round(site.strength * config.weak_strength_scale, 4))
            graded.append(replace(site, strength=strength, stratum="weak"))
        elif draw < config.weak_fraction + (1 - config.weak_fraction) * config.redundant_fraction:
            primary = replace(site, stratum="redundant", group=site.name)
            offset = config.redundant_offset_bp
            graded += [
                primary,
                replace(primary, start=site.start + offset, end=site.end + offset, name=f"{site.name}_twin"),
            ]
        else:
            graded.append(site)
    if config.orientation_rule:
        graded = _apply_orientation_rule(graded, config.contact)
    effects = boundary_strengths(graded, config.contact)
    return [replace(s, effect=round(effects.get(s.name, 0.0), 4)) for s in graded]


def _apply_orientation_rule(sites: list[Site], params: ContactParams) -> list[Site]:
    """Demote functional sites without a convergent partner to ``unpaired_site`` until none is left.

    Demoting a site removes it as a blocker, which only strengthens the other pairs, so the
    loop ends (each pass demotes at least one site or stops).
    """
    while True:
        paired = {s.group or s.name for pair in convergent_pairs(sites, params) for s in (pair.left, pair.right)}
        lone = [s for s in sites if s.functional and (s.group or s.name) not in paired]
        if not lone:
            return sites
        demote = {s.name for s in lone}
        sites = [replace(s, role="unpaired_site") if s.name in demote else s for s in sites]


# ---------------------------------------------------------------- sequence


def _background(rng: np.random.Generator, length: int, gc: float) -> np.ndarray:
    probs = np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
    return np.searchsorted(np.cumsum(probs)[:-1], rng.random(length), side="right").astype(np.uint8)


def _has_motif(site: Site) -> bool:
    return site.role not in ("decoy_peak", "gc_stretch")


def _plant(
    rng: np.random.Generator, codes: np.ndarray, sites: list[Site], motif: Motif, config: SyntheticConfig
) -> None:
    for site in sites:
        if site.role == "gc_stretch":
            codes[site.start : site.end] = _background(rng, site.end - site.start, config.gc_stretch_gc)
        if not _has_motif(site):
            continue
        if site.stratum == "weak":
            codes[site.start : site.end] = _weak_motif(rng, motif, site.strand, config)
            continue
        for _ in range(10_000):
            instance = sample_motif(rng, motif, site.strand)  # type: ignore[arg-type]
            if motif.relative(scan(instance, motif, config.gc).score[0], config.gc) >= config.motif_min_relscore:
                break
        else:  # pragma: no cover - only for absurd thresholds
            raise ValueError(f"could not draw a motif with relative score >= {config.motif_min_relscore}")
        codes[site.start : site.end] = instance


def _weak_motif(rng: np.random.Generator, motif: Motif, strand: str, config: SyntheticConfig) -> np.ndarray:
    """A motif instance whose relative score lies in ``weak_relscore_range``: drawn, then mutated down into it."""
    low, high = config.weak_relscore_range
    for _ in range(10_000):
        instance = sample_motif(rng, motif, strand)  # type: ignore[arg-type]
        for _ in range(4 * motif.width):
            relative = motif.relative(scan(instance, motif, config.gc).score[0], config.gc)
            if relative < low:
                break
            if relative < high:
                return instance
            instance[rng.integers(motif.width)] = rng.integers(4)
    raise ValueError(f"could not draw a motif with relative score in {config.weak_relscore_range}")  # pragma: no cover


def _scrub(
    rng: np.random.Generator, codes: np.ndarray, sites: list[Site], motif: Motif, config: SyntheticConfig
) -> None:
    """Redraw chance motif matches outside planted motifs until none reaches the threshold.

    A hit's 19 bp are redrawn from the background; a fresh window is a hit with
    probability ~1e-3, so a few passes suffice.
    """
    width = motif.width
    low, high = motif.score_range(config.gc)
    threshold = low + config.background_max_relscore * (high - low)
    protected = np.zeros(codes.size + 1, np.int64)  # windows touching a planted motif are left alone
    for site in sites:
        if _has_motif(site):
            protected[max(site.start - width + 1, 0)] += 1
            protected[site.end] -= 1
    protected = np.cumsum(protected)[: codes.size - width + 1] > 0
    for _ in range(100):
        hits = np.flatnonzero((scan(codes, motif, config.gc).score >= threshold) & ~protected)
        if hits.size == 0:
            return
        positions = (hits[:, None] + np.arange(width)).ravel()
        codes[positions] = _background(rng, positions.size, config.gc)
    raise RuntimeError("background scrubbing did not converge")  # pragma: no cover


def _write_fasta(path: Path, sequences: dict[str, np.ndarray]) -> None:
    with path.open("w") as handle:
        for chrom, codes in sequences.items():
            text = decode(codes)
            handle.write(f">{chrom}\n")
            handle.write("\n".join(text[i : i + _FASTA_WIDTH] for i in range(0, len(text), _FASTA_WIDTH)))
            handle.write("\n")
    import pyfaidx

    pyfaidx.Faidx(str(path)).close()  # writes genome.fa.fai


# ---------------------------------------------------------------- tracks


def _track(
    rng: np.random.Generator,
    length: int,
    peaks: list[tuple[float, float]],
    sd: float,
    background: float,
    resolution: int,
) -> np.ndarray:
    """Gamma background (shape 2) plus Gaussian peaks ``(summit, height)``, sampled at bin centres."""
    n = -(-length // resolution)
    signal = rng.gamma(2.0, background / 2.0, n) if background > 0 else np.zeros(n)
    centers = (np.arange(n) + 0.5) * resolution
    for summit, height in peaks:
        lo, hi = np.searchsorted(centers, [summit - 5 * sd, summit + 5 * sd])
        signal[lo:hi] += height * np.exp(-0.5 * ((centers[lo:hi] - summit) / sd) ** 2)
    return signal.astype(np.float32)


def _peaks(rng: np.random.Generator, sites: list[Site], config: SyntheticConfig) -> dict[str, list]:
    """Summits and heights: functional (or unpaired) sites and decoys get both peaks, motif-only sites,
    GC stretches and redundant twins none (a twin shares its primary's peak)."""
    peaks: dict[str, list] = {"ctcf": [], "atac": []}
    for site in sites:
        if site.role in ("motif_only", "gc_stretch") or (site.group and site.group != site.name):
            continue
        summit = site.center + rng.normal(0, config.peak_jitter_bp)
        for track, height in (("ctcf", config.ctcf_peak_height), ("atac", config.atac_peak_height)):
            jitter = np.exp(rng.normal(0, config.height_noise))
            peaks[track].append((summit, height * site.strength * jitter))
    return peaks


def _write_bigwig(path: Path, tracks: dict[str, np.ndarray], chrom_sizes: dict[str, int], resolution: int) -> None:
    import pyBigWig

    handle = pyBigWig.open(str(path), "w")
    try:
        handle.addHeader(list(chrom_sizes.items()), maxZooms=4)
        for chrom, values in tracks.items():
            length = chrom_sizes[chrom]
            full = length // resolution
            if full:
                handle.addEntries(chrom, 0, values=values[:full].astype(np.float64), span=resolution, step=resolution)
            if full * resolution < length:  # the partial last bin
                handle.addEntries([chrom], [full * resolution], ends=[length], values=[float(values[full])])
    finally:
        handle.close()


# ---------------------------------------------------------------- truth


_BED_HEADER = "#chrom\tstart\tend\tname\tscore\tstrand\trole\tstrength\tstratum\teffect\tgroup\n"


def stratum_of(site: Site) -> str:
    """A site's difficulty stratum: ``weak``/``redundant``/``standard`` for functional sites, else its role."""
    if site.role != "ctcf_site":
        return site.role
    return site.stratum or "standard"


def _write_truth(path: Path, sites: list[Site]) -> None:
    with path.open("w") as handle:
        handle.write(_BED_HEADER)
        for s in sites:
            score = int(round(1000 * s.strength))
            # the stratum column keeps a demoted (unpaired) site's grade; stratum_of reads its role first
            stratum = s.stratum or ("standard" if s.role in ("ctcf_site", "unpaired_site") else s.role)
            handle.write(
                f"{s.chrom}\t{s.start}\t{s.end}\t{s.name}\t{score}\t{s.strand}\t{s.role}\t{s.strength:.4f}"
                f"\t{stratum}\t{s.effect:.4f}\t{s.group or '.'}\n"
            )


def read_truth(path: str | Path) -> list[Site]:
    """Read ``truth.bed`` back into :class:`Site` objects (file order).

    Raises
    ------
    ValueError
        Naming the line of a record with fewer than 8 columns or an unknown role.
    """
    sites = []
    with Path(path).open() as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip() or line.startswith("#"):
                continue
            f = line.rstrip("\n").split("\t")
            if len(f) < 8 or f[6] not in ALL_ROLES:
                raise ValueError(f"{path}:{lineno}: expected chrom start end name score strand role strength")
            stratum, effect, group = (f + ["", "0", "."])[8:11] if len(f) < 11 else f[8:11]
            stratum = stratum if stratum in ("weak", "redundant") else ""
            sites.append(
                Site(
                    f[0],
                    int(f[1]),
                    int(f[2]),
                    f[3],
                    float(f[7]),
                    f[5],
                    f[6],
                    stratum,
                    "" if group == "." else group,
                    float(effect),
                )
            )
    return sites


def _strata_counts(sites: list[Site]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for site in sites:
        counts[stratum_of(site)] = counts.get(stratum_of(site), 0) + 1
    return dict(sorted(counts.items()))


def graded_config(seed: int = 0) -> SyntheticConfig:
    """The graded genome of the method benchmark (``docs/method_evaluation.md``): every knob on.

    A quarter of functional sites weak, a sixth of the rest with a redundant twin, the
    orientation rule with pairs needing weight 0.15, 8 GC-rich stretches and the default
    decoys per Mb; chromosomes as the default genome.
    """
    return SyntheticConfig(
        seed=seed,
        weak_fraction=0.25,
        redundant_fraction=0.15,
        orientation_rule=True,
        gc_stretches_per_mb=8.0,
        contact=ContactParams(min_pair_weight=0.15),
    )


# ---------------------------------------------------------------- entry point


def generate(config: SyntheticConfig, outdir: str | Path) -> SyntheticGenome:
    """Generate the genome, tracks, truth and contact maps into ``outdir``.

    Parameters
    ----------
    config
        What to plant; validated before anything is written.
    outdir
        Output folder, created if missing; existing files of the same names are overwritten.

    Returns
    -------
    SyntheticGenome

    Raises
    ------
    ValueError
        If the config is invalid or a chromosome cannot fit its features; nothing is written.
    """
    motif = load_ctcf()
    config.validate(motif.width)
    root = Path(outdir)
    chrom_sizes = {name: int(length) for name, length in config.chromosomes}

    sequences, sites, ctcf, atac, maps = {}, [], {}, {}, {}
    for index, (chrom, length) in enumerate(chrom_sizes.items()):
        streams = [np.random.default_rng([config.seed, index, k]) for k in range(5)]
        chrom_sites = _grade(
            streams[_STREAM_GRADES], _layout(streams[_STREAM_LAYOUT], chrom, length, config, motif.width), config
        )
        codes = _background(streams[_STREAM_SEQUENCE], length, config.gc)
        _plant(streams[_STREAM_SEQUENCE], codes, chrom_sites, motif, config)
        _scrub(streams[_STREAM_SEQUENCE], codes, chrom_sites, motif, config)
        peaks = _peaks(streams[_STREAM_TRACKS], chrom_sites, config)
        ctcf[chrom] = _track(
            streams[_STREAM_TRACKS],
            length,
            peaks["ctcf"],
            config.ctcf_peak_sd,
            config.ctcf_background,
            config.track_resolution,
        )
        atac[chrom] = _track(
            streams[_STREAM_TRACKS],
            length,
            peaks["atac"],
            config.atac_peak_sd,
            config.atac_background,
            config.track_resolution,
        )
        maps[chrom] = contact_map(
            chrom_sites, 0, length, config.contact_bin_size, streams[_STREAM_CONTACTS], config.contact
        )
        sequences[chrom] = codes
        sites.extend(chrom_sites)

    root.mkdir(parents=True, exist_ok=True)
    (root / "contacts").mkdir(exist_ok=True)
    _write_fasta(root / "genome.fa", sequences)
    _write_bigwig(root / "ctcf.bw", ctcf, chrom_sizes, config.track_resolution)
    _write_bigwig(root / "atac.bw", atac, chrom_sizes, config.track_resolution)
    _write_truth(root / "truth.bed", sites)
    for chrom, matrix in maps.items():
        np.save(root / "contacts" / f"{chrom}.npy", matrix)
    meta = {
        "format_version": FORMAT_VERSION,
        "motif": motif.matrix_id,
        "config": config.to_dict(),
        "counts": {chrom: config.counts(length) for chrom, length in chrom_sizes.items()},
        "strata": {chrom: _strata_counts([s for s in sites if s.chrom == chrom]) for chrom in chrom_sizes},
        "files": {
            "fasta": "genome.fa",
            "ctcf": "ctcf.bw",
            "atac": "atac.bw",
            "truth": "truth.bed",
            "contacts": "contacts/{chrom}.npy",
        },
        "contact_bin_size": config.contact_bin_size,
        "contact_transform": "log1p",
        "track_transforms": {"ctcf": "none", "atac": "log1p"},
    }
    (root / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    return SyntheticGenome(root, config, chrom_sizes, sites)

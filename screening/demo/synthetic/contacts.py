"""A loop-extrusion-style contact model driven by planted CTCF sites.

The model is a closed-form caricature of cohesin loop extrusion, cheap enough to
evaluate any window directly (no chromosome-wide matrix is needed, though one of a
few thousand bins is fine too). In bin units, with bin centres ``c_i = i + 0.5``
and site centres ``u_k = (x_k - start) / bin_size``::

    C_ij = P(|i-j|) · I_ij + E_ij + E_ji,         P(d) = depth · (1 + d)^-alpha
    I_ij = Π_{k: i < e_k <= j} (1 - q_k),          e_k = round(u_k)       (insulation)
    q_k  = insulation · h_k · (lone + (1 - lone) · g_k)                   (boundary strength)
    w_ab = exp(-(x_b - x_a) / λ) · Π_{a<k<b} (1 - block · h_k)           (convergent pair a+, b-)
    g_k  = max_partner w                                                    (loop engagement)
    E    = dots + stripes at every convergent pair (see :func:`contact_map`)

then multiplicative log-normal noise and ``log(1 + C)``, the transform of
C.Origami's targets. Only sites with ``role == "ctcf_site"`` take part, so
decoy peaks and motif-only sites leave the map untouched by construction.
See ``docs/synthetic.md`` for the reasoning behind each term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "ALL_ROLES",
    "ROLES",
    "ContactParams",
    "LoopPair",
    "Site",
    "boundary_strengths",
    "contact_map",
    "convergent_pairs",
]

#: Truth roles: functional site (motif + peak), peak without motif, motif without peak.
ROLES = ("ctcf_site", "decoy_peak", "motif_only")
#: Every role ``truth.bed`` may hold: :data:`ROLES` plus those of the difficulty knobs (``docs/synthetic.md``):
#: a motif + peak without a convergent partner (no effect under the orientation rule) and a GC-rich stretch.
ALL_ROLES = ROLES + ("unpaired_site", "gc_stretch")


@dataclass(frozen=True, order=True)
class Site:
    """One planted feature, 0-based half-open ``[start, end)``.

    Attributes
    ----------
    chrom, start, end
        Location of the motif (or, for a decoy, the 19 bp at its peak summit).
    name
        Unique name, e.g. ``ctcf_site_chr1_0003``.
    strength
        ``h`` in ``[0, 1]``: scales the peak heights and, for functional sites, the
        boundary and loop strengths; ``0`` for motif-only sites.
    strand
        Motif orientation ``"+"``/``"-"``; ``"."`` for decoy peaks.
    role
        One of :data:`ALL_ROLES`.
    stratum
        Difficulty stratum of a functional site (``weak``, ``redundant``; ``""`` for a standard one).
    group
        Sites of one non-empty group act as one (redundant twins): the contact model keeps only
        the strongest, so removing either alone leaves the map (nearly) unchanged.
    effect
        Functional strength: the boundary strength ``q_k`` the site contributes (its group's for
        a redundant twin), ``0`` for every role without function.
    """

    chrom: str
    start: int
    end: int
    name: str = ""
    strength: float = 1.0
    strand: str = "+"
    role: str = "ctcf_site"
    stratum: str = ""
    group: str = ""
    effect: float = 0.0

    @property
    def center(self) -> float:
        """Midpoint in bp (may be fractional)."""
        return (self.start + self.end) / 2.0

    @property
    def functional(self) -> bool:
        return self.role == "ctcf_site"


@dataclass(frozen=True)
class ContactParams:
    """Parameters of :func:`contact_map` (defaults tuned for 1 kb bins).

    Attributes
    ----------
    depth
        Expected contacts on the diagonal; sets the dynamic range of ``log(1 + C)``.
    alpha
        Power-law exponent of the distance decay ``P(d) ∝ (1 + d)^-alpha`` (d in bins).
    insulation
        Largest fraction of contacts one boundary removes across it.
    lone
        Boundary strength of a site with no convergent partner, relative to a fully
        engaged one (orientation matters through this).
    block
        Probability that an extruder is stopped by an intervening site of strength 1.
    processivity_bp
        Extruder processivity λ: loops longer than this become rare.
    max_loop_bp
        Convergent pairs further apart are ignored.
    min_pair_weight
        Pairs with ``w_ab`` below this draw no dot or stripe.
    dot_gain, stripe_gain
        Heights of corner dots and of the stripes along loop edges, relative to ``P`` at
        the loop size.
    dot_width_bp
        Gaussian s.d. of dots and of the stripes' cross-section.
    noise_sigma
        s.d. of the multiplicative log-normal noise (``0`` for none).
    """

    depth: float = 40.0
    alpha: float = 1.0
    insulation: float = 0.75
    lone: float = 0.35
    block: float = 0.5
    processivity_bp: float = 120_000.0
    max_loop_bp: float = 400_000.0
    min_pair_weight: float = 0.02
    dot_gain: float = 8.0
    stripe_gain: float = 1.0
    dot_width_bp: float = 1_500.0
    noise_sigma: float = 0.15

    def __post_init__(self) -> None:
        for name in ("depth", "processivity_bp", "max_loop_bp", "dot_width_bp"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ContactParams.{name} must be positive, got {getattr(self, name)}")
        for name in ("insulation", "lone", "block", "min_pair_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"ContactParams.{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("alpha", "dot_gain", "stripe_gain", "noise_sigma"):
            if getattr(self, name) < 0:
                raise ValueError(f"ContactParams.{name} must be non-negative, got {getattr(self, name)}")


@dataclass(frozen=True)
class LoopPair:
    """A convergent pair: ``left`` (``+``) upstream of ``right`` (``-``), with weight ``w_ab``."""

    left: Site
    right: Site
    weight: float


def _functional(sites: Iterable[Site]) -> list[Site]:
    """Position-sorted functional sites, one per redundancy group (its strongest, the first on ties)."""
    kept: dict[object, Site] = {}
    for site in sorted((s for s in sites if s.functional and s.strand in ("+", "-")), key=lambda s: s.center):
        key = site.group or id(site)
        if key not in kept or site.strength > kept[key].strength:
            kept[key] = site
    return sorted(kept.values(), key=lambda s: s.center)


def _pairs(ordered: Sequence[Site], params: ContactParams) -> list[tuple[int, int, float]]:
    """``(a, b, w_ab)`` for convergent pairs of position-sorted functional sites."""
    centers = np.array([s.center for s in ordered])
    # Survival past each site; a cumulative sum of logs makes each w_ab O(1).
    log_pass = np.log1p(-params.block * np.array([s.strength for s in ordered]).clip(0, 1) + 1e-12)
    cum = np.concatenate([[0.0], np.cumsum(log_pass)])
    pairs = []
    for a, left in enumerate(ordered):
        if left.strand != "+":
            continue
        for b in range(a + 1, len(ordered)):
            distance = centers[b] - centers[a]
            if distance > params.max_loop_bp:
                break
            if ordered[b].strand != "-":
                continue
            weight = float(np.exp(-distance / params.processivity_bp + cum[b] - cum[a + 1]))
            if weight >= params.min_pair_weight:
                pairs.append((a, b, weight))
    return pairs


def convergent_pairs(sites: Iterable[Site], params: ContactParams | None = None) -> list[LoopPair]:
    """Every convergent pair with ``w_ab >= min_pair_weight`` (see module docstring).

    Parameters
    ----------
    sites
        Sites of one chromosome; non-functional roles are ignored.
    params
        Model parameters; defaults when ``None``.

    Returns
    -------
    list of LoopPair
        Sorted by the ``+`` anchor, then the ``-`` anchor.
    """
    ordered = _functional(sites)
    return [LoopPair(ordered[a], ordered[b], w) for a, b, w in _pairs(ordered, params or ContactParams())]


def _engagement(n_sites: int, pairs: Sequence[tuple[int, int, float]]) -> np.ndarray:
    """``g_k``: the weight of each site's strongest convergent loop (0 when it has none)."""
    engaged = np.zeros(n_sites)
    for a, b, weight in pairs:
        engaged[a] = max(engaged[a], weight)
        engaged[b] = max(engaged[b], weight)
    return engaged


def boundary_strengths(sites: Iterable[Site], params: ContactParams | None = None) -> dict[str, float]:
    """``q_k`` of every functional site by name (twins of a group share their group's), see module docstring."""
    params = params or ContactParams()
    sites = list(sites)
    ordered = _functional(sites)
    engaged = _engagement(len(ordered), _pairs(ordered, params))
    strength = np.array([s.strength for s in ordered]).clip(0, 1)
    q = params.insulation * strength * (params.lone + (1 - params.lone) * engaged)
    by_key = {(s.group or s.name): float(v) for s, v in zip(ordered, q)}
    return {s.name: by_key.get(s.group or s.name, 0.0) for s in sites if s.functional}


def _insulation_profile(
    ordered: Sequence[Site], engaged: np.ndarray, start: int, bin_size: int, n: int, params: ContactParams
) -> np.ndarray:
    """``S[b]``: summed log pass-through of boundaries at bin edges ``1..b``, so log I_ij = S_j - S_i."""
    strength = np.array([s.strength for s in ordered]).clip(0, 1)
    q = params.insulation * strength * (params.lone + (1 - params.lone) * engaged)
    edges = np.rint((np.array([s.center for s in ordered]) - start) / bin_size).astype(np.int64)
    inside = (edges >= 1) & (edges <= n - 1)  # edges outside shift every S[b] equally: no effect
    per_edge = np.zeros(n)
    np.add.at(per_edge, edges[inside], np.log1p(-q[inside] + 1e-12))
    return np.cumsum(per_edge)


def _decay(distance_bins: np.ndarray | float, params: ContactParams) -> np.ndarray:
    return params.depth * (1.0 + np.abs(distance_bins)) ** -params.alpha


def _gauss_span(center: float, sigma: float, n: int) -> tuple[int, int, np.ndarray]:
    lo, hi = max(0, int(np.floor(center - 4 * sigma))), min(n, int(np.ceil(center + 4 * sigma)) + 1)
    profile = np.exp(-0.5 * ((np.arange(lo, hi) + 0.5 - center) / sigma) ** 2)
    return lo, hi, profile


def _add_loop(extra: np.ndarray, u_a: float, u_b: float, amplitude: float, sigma: float, params: ContactParams) -> None:
    """Dot at (u_a, u_b); stripes along row u_a and column u_b between the anchors (upper triangle)."""
    n = extra.shape[0]
    r0, r1, row_prof = _gauss_span(u_a, sigma, n)
    c0, c1, col_prof = _gauss_span(u_b, sigma, n)
    if r1 > r0 and c1 > c0:
        dot = params.dot_gain * amplitude * _decay(u_b - u_a, params)
        extra[r0:r1, c0:c1] += dot * np.outer(row_prof, col_prof)
    if params.stripe_gain == 0:
        return
    # Cells strictly between the anchors: one extruder leg stalled at an anchor, the other anywhere.
    lo, hi = max(0, int(np.ceil(u_a - 0.5))), min(n, int(np.floor(u_b - 0.5)) + 1)
    if hi <= lo:
        return
    span = np.arange(lo, hi) + 0.5
    if r1 > r0:  # horizontal stripe from the + anchor
        extra[r0:r1, lo:hi] += params.stripe_gain * amplitude * np.outer(row_prof, _decay(span - u_a, params))
    if c1 > c0:  # vertical stripe into the - anchor
        extra[lo:hi, c0:c1] += params.stripe_gain * amplitude * np.outer(_decay(u_b - span, params), col_prof)


def contact_map(
    sites: Iterable[Site],
    chrom_start: int,
    chrom_end: int,
    bin_size: int,
    rng: np.random.Generator | None = None,
    params: ContactParams | None = None,
) -> np.ndarray:
    """Target contact map of one window, ``log(1 + C)``.

    Parameters
    ----------
    sites
        Sites of the window's chromosome, **including those outside the window**: a
        site's boundary strength depends on its convergent partner, which may lie
        outside, so a window cut here equals the same window of a whole-chromosome
        map (up to noise). Roles other than ``ctcf_site`` are ignored.
    chrom_start, chrom_end
        Window ``[chrom_start, chrom_end)`` in bp; ``n = ceil(length / bin_size)``
        bins, the last one partial when the length is not a multiple.
    bin_size
        Bin size in bp.
    rng
        Source of the multiplicative noise; ``None`` gives the noise-free map.
    params
        Model parameters; :class:`ContactParams` defaults when ``None``.

    Returns
    -------
    numpy.ndarray
        Symmetric ``float32 [n, n]`` map, ``log(1 + contacts)``.
    """
    params = params or ContactParams()
    if bin_size <= 0 or chrom_end <= chrom_start:
        raise ValueError(f"need bin_size > 0 and chrom_end > chrom_start, got {bin_size}, [{chrom_start}, {chrom_end})")
    n = -(-(chrom_end - chrom_start) // bin_size)
    ordered = _functional(sites)
    pairs = _pairs(ordered, params)
    engaged = _engagement(len(ordered), pairs)

    index = np.arange(n, dtype=np.float64)
    profile = _insulation_profile(ordered, engaged, chrom_start, bin_size, n, params)
    contacts = _decay(index[:, None] - index[None, :], params)
    contacts *= np.exp(-np.abs(profile[:, None] - profile[None, :]))

    extra = np.zeros((n, n))
    sigma = max(params.dot_width_bp / bin_size, 0.5)  # at coarse bins a dot still covers its pixel
    for a, b, weight in pairs:
        left, right = ordered[a], ordered[b]
        u_a = (left.center - chrom_start) / bin_size
        u_b = (right.center - chrom_start) / bin_size
        _add_loop(extra, u_a, u_b, left.strength * right.strength * weight, sigma, params)
    contacts += extra + extra.T

    if rng is not None and params.noise_sigma > 0:
        noise = np.triu(rng.standard_normal((n, n)))
        noise = noise + np.triu(noise, 1).T  # symmetric, one draw per pair
        contacts *= np.exp(params.noise_sigma * noise - params.noise_sigma**2 / 2)
    return np.log1p(contacts).astype(np.float32)

"""Synthetic genomes with planted CTCF ground truth (see ``docs/synthetic.md``).

>>> from screening.demo.synthetic import SyntheticConfig, generate
>>> genome = generate(SyntheticConfig(seed=1), "demo-genome")   # doctest: +SKIP
"""

from screening.demo.synthetic.contacts import (
    ALL_ROLES,
    ROLES,
    ContactParams,
    LoopPair,
    Site,
    boundary_strengths,
    contact_map,
    convergent_pairs,
)
from screening.demo.synthetic.generator import (
    FORMAT_VERSION,
    SyntheticConfig,
    SyntheticGenome,
    generate,
    graded_config,
    read_truth,
    stratum_of,
)
from screening.perturb.motif import Motif, ScanResult, load_ctcf, read_jaspar, read_jaspar_all, sample_motif, scan

__all__ = [
    "ALL_ROLES",
    "FORMAT_VERSION",
    "ROLES",
    "ContactParams",
    "LoopPair",
    "Motif",
    "ScanResult",
    "Site",
    "boundary_strengths",
    "SyntheticConfig",
    "SyntheticGenome",
    "contact_map",
    "convergent_pairs",
    "generate",
    "graded_config",
    "load_ctcf",
    "read_jaspar",
    "read_jaspar_all",
    "read_truth",
    "sample_motif",
    "scan",
    "stratum_of",
]

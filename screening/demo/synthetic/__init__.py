"""Synthetic genomes with planted CTCF ground truth (see ``docs/synthetic.md``).

>>> from screening.demo.synthetic import SyntheticConfig, generate
>>> genome = generate(SyntheticConfig(seed=1), "demo-genome")   # doctest: +SKIP
"""

from screening.demo.synthetic.contacts import ROLES, ContactParams, LoopPair, Site, contact_map, convergent_pairs
from screening.demo.synthetic.generator import FORMAT_VERSION, SyntheticConfig, SyntheticGenome, generate, read_truth
from screening.perturb.motif import Motif, ScanResult, load_ctcf, read_jaspar, read_jaspar_all, sample_motif, scan

__all__ = [
    "FORMAT_VERSION",
    "ROLES",
    "ContactParams",
    "LoopPair",
    "Motif",
    "ScanResult",
    "Site",
    "SyntheticConfig",
    "SyntheticGenome",
    "contact_map",
    "convergent_pairs",
    "generate",
    "load_ctcf",
    "read_jaspar",
    "read_jaspar_all",
    "read_truth",
    "sample_motif",
    "scan",
]

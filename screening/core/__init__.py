"""The bottom layer, imported by everything and importing nothing of the package: genomic regions
(:mod:`~screening.core.regions`), sequence encoding (:mod:`~screening.core.encode`), the one error base
(:mod:`~screening.core.errors`) and the one URL test (:mod:`~screening.core.urls`).
"""

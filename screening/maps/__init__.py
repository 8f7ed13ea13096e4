"""Pure functions over predicted contact maps: aligning a perturbed map to the reference
(:mod:`~screening.maps.align`), the scores (:mod:`~screening.maps.score`) and the targets they are
computed over (:mod:`~screening.maps.targets`). No model, no I/O.
"""

"""The bundled demo: the demo screen (:mod:`~screening.demo.demo`), the synthetic genome it runs on
(:mod:`screening.demo.synthetic`) and the training of its small model (:mod:`~screening.demo.training`).
"""

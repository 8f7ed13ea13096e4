"""Running a model over perturbations: the engine (:mod:`~screening.compute.engine`), overlapping input
building with model compute (:mod:`~screening.compute.prefetch`) and a worker process's throughput
settings (:mod:`~screening.compute.threads`). Numeric precision is the models' own
(:mod:`screening.models.precision`): the adapters run under it.
"""

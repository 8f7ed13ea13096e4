"""A unified, discriminative evaluation of every interpretation method (``docs/method_evaluation.md``).

>>> from screening.demo.benchmark import benchmark_methods, load_benchmark_config   # doctest: +SKIP
>>> config, base = load_benchmark_config("benchmark.yaml")                           # doctest: +SKIP
>>> benchmark_methods(config, "bench-out", run_screen, base)                         # doctest: +SKIP
"""

from screening.demo.benchmark.config import (
    METHODS,
    BenchmarkConfig,
    BenchmarkError,
    MotifsEntry,
    load_benchmark_config,
    parse_benchmark_config,
)
from screening.demo.benchmark.metrics import consistency, discrimination, randomisation_check, rank_correlation
from screening.demo.benchmark.run import BenchmarkResult, benchmark_methods, randomised_checkpoints, select_regions

__all__ = [
    "METHODS",
    "BenchmarkConfig",
    "BenchmarkError",
    "BenchmarkResult",
    "MotifsEntry",
    "benchmark_methods",
    "consistency",
    "discrimination",
    "load_benchmark_config",
    "parse_benchmark_config",
    "randomisation_check",
    "randomised_checkpoints",
    "rank_correlation",
    "select_regions",
]

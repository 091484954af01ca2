"""Benchmarks of napari-composite-tasking: ``python benchmarks/run.py`` runs them all.

Each module here (not starting with ``_``, other than ``run``) registers its
benchmark(s) with :func:`benchmarks._registry.benchmark`; adding a module adds rows
to the one table that ``run.py`` prints. See ``docs/benchmarks.md``.
"""

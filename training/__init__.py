"""composite_tasking.training: losses, metrics, trainer and recipes (filled in by the training issue).

This folder lives at the top of the repository and is mapped to the subpackage
``composite_tasking.training`` in pyproject.toml.
"""

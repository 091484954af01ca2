"""napari-composite-tasking: a data-labelling assistant built on CompositeTasking.

The core (everything here but ``_napari``) never imports napari or Qt.
"""

from .__about__ import __version__
from .palette import load_rule, load_rule_file
from .tasks import TASK_NAMES, TASKS, decode_output, get_task

__all__ = ["__version__", "TASKS", "TASK_NAMES", "get_task", "decode_output", "load_rule",
           "load_rule_file"]  # fmt: skip

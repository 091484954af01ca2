"""The ``ctn`` command.

Exit codes: 0 all done; 1 finished but some inputs were skipped; 2 usage error (a clear
message, nothing written); 3 (``ctn label``) stopped by an error of the file system or
the OS (a full disk, a read-only place; the message names the path and the reason): the
store stays valid, fix the cause and re-run to resume; 130 interrupted.

The modules: ``parser`` (the arguments and help of every command), ``checks`` (exit
codes, argument types, checks before anything is written), ``progress`` (tqdm bars), and
the commands: ``info``, ``labelling`` (label, demo, annotate, review, export, import),
``training`` (synth, train, finetune, evaluate).
"""

from __future__ import annotations

import sys

from .checks import EXIT_OK, EXIT_PARTIAL, EXIT_STOPPED, EXIT_USAGE
from .info import cmd_info, devices
from .labelling import cmd_annotate, cmd_demo, cmd_export, cmd_import, cmd_label, cmd_review
from .parser import build_parser
from .training import cmd_evaluate, cmd_finetune, cmd_synth, cmd_train, print_table

#: the function of each command
COMMANDS = {
    "info": cmd_info, "synth": cmd_synth, "label": cmd_label, "demo": cmd_demo, "train": cmd_train,
    "finetune": cmd_finetune, "annotate": cmd_annotate, "evaluate": cmd_evaluate, "review": cmd_review,
    "export": cmd_export, "import": cmd_import,
}  # fmt: skip

__all__ = ["COMMANDS", "EXIT_OK", "EXIT_PARTIAL", "EXIT_STOPPED", "EXIT_USAGE", "build_parser", "cmd_annotate",
           "cmd_demo", "cmd_evaluate", "cmd_export", "cmd_finetune", "cmd_import", "cmd_info", "cmd_label",
           "cmd_review", "cmd_synth", "cmd_train", "devices", "main", "print_table"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = COMMANDS.get(args.command)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return int(func(args))

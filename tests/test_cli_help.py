"""What `ctn --help` and its refusals tell a new user (issue #18, item 5: help text)."""

import argparse
import subprocess
import sys

import pytest

from composite_tasking.cli import build_parser


def _subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_command_has_a_description_and_every_option_a_help():
    missing = []
    for name, p in _subcommands().items():
        if not p.description:
            missing.append(f"ctn {name}: no description")
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.help:
                missing.append(f"ctn {name} {'/'.join(action.option_strings) or action.dest}: no help")
    assert missing == []


def test_shard_says_it_counts_from_zero_and_train_lists_the_built_in_recipes():
    cmds = _subcommands()
    shard = next(a for a in cmds["label"]._actions if "--shard" in a.option_strings)
    assert "from 0" in shard.help
    res = subprocess.run([sys.executable, "-m", "composite_tasking.cli", "train", "--help"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    for recipe in ("ctn-synthetic", "finetune", "palette-synthetic-cpu"):
        assert recipe in text, recipe


@pytest.mark.parametrize("content, says", [("", "is empty"), ("- R2\n", "got a list")])
def test_an_empty_or_wrong_rule_file_is_named_plainly(tmp_path, content, says):
    from composite_tasking.palette import RuleError, load_rule

    rule = tmp_path / "rule.yaml"
    rule.write_text(content)
    with pytest.raises(RuleError) as e:
        load_rule(str(rule))
    assert says in str(e.value) and str(rule) in str(e.value) and "NoneType" not in str(e.value)

"""Every option and argument of every npgan subcommand has a help string (``npgan train --help`` explains all)."""

from __future__ import annotations

import argparse

from npgan.run.cli import build_parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_of_every_subcommand_has_help():
    subs = _subcommands(build_parser())
    assert {"train", "resume", "sample", "info", "export", "download"} <= set(subs)
    missing = [f"npgan {name} {'/'.join(a.option_strings) or a.dest}"
               for name, p in subs.items() for a in p._actions
               if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert missing == []


def test_help_reads_the_lists_of_names(capsys):
    from npgan.kde import BANDWIDTH_RULES
    p = _subcommands(build_parser())["train"]
    text = p.format_help()
    assert " | ".join(BANDWIDTH_RULES) in " ".join(text.split())
    assert "total training steps (default: the preset's)" in " ".join(text.split())

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


def test_no_parser_takes_an_abbreviation(tmp_path, capsys):
    """``--step 100`` is not ``--steps 100``: argparse's allow_abbrev is off on the command and every subcommand."""
    from npgan.run.cli import main
    parser = build_parser()
    assert parser.allow_abbrev is False
    assert all(p.allow_abbrev is False for p in _subcommands(parser).values())
    out = tmp_path / "r"
    for argv, wrong in ((["train", "--preset", "ring8", "--step", "100", "--out", str(out)], "--step 100"),
                        (["train", "--preset", "ring8", "--no-prog", "--out", str(out)], "--no-prog"),
                        (["sample", str(out), "--pn", "x.png"], "--pn x.png")):
        rc = main(argv)
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1, lines
        assert lines[0] == f"npgan: error: unrecognized arguments: {wrong}", lines
    assert not out.exists()

"""Every `usfmae` command line shown in README.md parses: no renamed or removed flag goes unnoticed.

Running them all would take an hour and data the README only names; parsing them checks what
rots first, the verbs and options, with the CLI's own parser.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from usfmae import cli

README = Path(__file__).resolve().parents[1] / "README.md"
_COMMAND = re.compile(r"^([A-Z_]+=\S+\s+)*usfmae\s")  # optional VAR=value prefixes


def readme_command_lines(text: str) -> list[tuple[int, str]]:
    """(line number, command) for each `usfmae ...` line of the indented or fenced code blocks,
    backslash continuations joined."""
    lines = text.splitlines()
    found, fenced, i = [], False, 0
    while i < len(lines):
        line = lines[i]
        fenced ^= line.startswith("```")
        command = line.strip()
        if (line.startswith("    ") or fenced) and _COMMAND.match(command):
            start = i + 1
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1] + " " + lines[i].strip()
            found.append((start, command))
        i += 1
    return found


def argv_of(command: str) -> list[str]:
    """The CLI's arguments: comments, variable prefixes and anything after a pipe or `&&` dropped."""
    words = shlex.split(command, comments=True)
    while words and re.match(r"^[A-Z_]+=", words[0]):
        words.pop(0)
    words = words[1:]
    for stop in ("|", "&&", ";", ">"):
        if stop in words:
            words = words[:words.index(stop)]
    return words


def parse(argv: list[str]) -> int:
    """0 when the CLI's parser accepts ``argv`` (``--help`` included), else argparse's exit code."""
    verb = next((a for a in argv if a in cli.VERBS), None)
    try:
        cli.build_parser(verb).parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


COMMANDS = readme_command_lines(README.read_text(encoding="utf-8"))


def test_the_readme_shows_commands_for_every_pipeline_stage():
    verbs = {next(a for a in argv_of(c) if a in cli.VERBS) for _, c in COMMANDS}
    assert {"ingest", "clean", "pack", "pretrain", "finetune", "segment", "embed", "predict", "export"} <= verbs


@pytest.mark.parametrize(("line", "command"), COMMANDS, ids=[f"L{n}" for n, _ in COMMANDS])
def test_readme_command_parses(line, command, capsys):
    assert parse(argv_of(command)) == 0, f"README.md:{line}: {command}\n{capsys.readouterr().err}"


@pytest.mark.parametrize(("command", "code"), [
    ("usfmae ingest in --out corpus --fps 3   # a comment", 0),
    ("OMP_NUM_THREADS=4 usfmae clean m.parquet --out c --workers 2", 0),
    ("usfmae --threads 1 pretrain --out runs/tiny --config c.yaml", 0),
    ("usfmae ingest in --out corpus --no-such-flag", 2),
    ("usfmae no-such-verb", 2),
])
def test_the_check_itself_tells_good_from_bad(command, code, capsys):
    assert parse(argv_of(command)) == code


def test_continued_and_fenced_lines_are_found():
    text = "intro\n\n    usfmae ingest a \\\n        --out b\n```\nusfmae pack m --out s\n```\nusfmae not code\n"
    assert readme_command_lines(text) == [(3, "usfmae ingest a  --out b"), (6, "usfmae pack m --out s")]

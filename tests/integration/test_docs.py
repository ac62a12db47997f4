"""The README's command-line section names every command the CLI has."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def _commands(group: click.Group, prefix: str = "") -> list[str]:
    found: list[str] = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix}{name} ")
        else:
            found.append(f"{prefix}{name}")
    return found


def test_readme_lists_every_command() -> None:
    section = README.read_text(encoding="utf-8").split("## Command line", 1)[1]
    commands = _commands(main)
    assert len(commands) > 15
    # "group a | b" on one line documents "group a" and "group b"
    missing = [c for c in commands
               if c not in section
               and not (" " in c and f"| {c.split(' ', 1)[1]}" in section
                        and c.split(" ", 1)[0] in section)]
    assert not missing, f"README's command line section lacks: {missing}"

"""The `edge` command's argparse tree: every option, argument and sub-command has help text,
and every command that reads settings takes `--config FILE`."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from edge import cli

# Commands that read no settings file: the demo writes its own, a new secret is just a file.
# migrate-to-postgres names both databases itself (--from, --to) and reads no settings.
WITHOUT_CONFIG = {"edge demo", "edge secret new", "edge centre migrate-to-postgres"}


def commands(
    parser: argparse.ArgumentParser, path: str = "edge"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(name, parser) of every command that runs something (the tree's leaves)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from commands(sub, f"{path} {name}")


def without_help(parser: argparse.ArgumentParser, path: str = "edge") -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helped = {choice.dest for choice in action._choices_actions if choice.help}
            for name, sub in action.choices.items():
                if name not in helped:
                    yield f"{path} {name} (the command)"
                yield from without_help(sub, f"{path} {name}")
        elif not action.help:  # argparse.SUPPRESS is a deliberate choice: it is not empty
            yield f"{path} {'/'.join(action.option_strings) or action.dest}"


def test_every_option_argument_and_command_has_help() -> None:
    assert list(without_help(cli.build_parser())) == []


def test_the_walk_finds_a_missing_help() -> None:
    parser = argparse.ArgumentParser(prog="edge")
    sub = parser.add_subparsers()
    one = sub.add_parser("one", help="a command")
    one.add_argument("--quiet", action="store_true")
    one.add_argument("--fine", help="has help")
    sub.add_parser("two")
    assert list(without_help(parser)) == ["edge one --quiet", "edge two (the command)"]


def test_every_command_that_reads_settings_takes_config() -> None:
    leaves = dict(commands(cli.build_parser()))
    assert set(leaves) >= WITHOUT_CONFIG
    missing = [
        name
        for name, parser in leaves.items()
        if name not in WITHOUT_CONFIG
        and not any("--config" in a.option_strings for a in parser._actions)
    ]
    assert missing == []
    assert cli.build_parser().parse_args(["check-config", "--config", "x.toml"]).config.name == (
        "x.toml"
    )

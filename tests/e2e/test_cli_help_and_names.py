"""`--help` is complete for every command, `items show` reads as a record, unknown names get close names."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli.main import build_parser
from tests.e2e.test_cli import FIXTURES, Cli


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("jitpass",)) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser, bool]]:
    """Every parser of the tree, recursively: (its words, the parser, whether it is a leaf command)."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    yield path, parser, not groups
    for group in groups:
        for name, child in group.choices.items():
            yield from _commands(child, (*path, name))


def test_the_walk_reaches_every_command() -> None:
    leaves = {" ".join(p) for p, _, leaf in _commands(build_parser()) if leaf}
    # A sample from every group, so a walk that stopped early would fail here.
    assert {"jitpass serve", "jitpass items import", "jitpass items show", "jitpass audit verify",
            "jitpass keys retire", "jitpass policy check", "jitpass report", "jitpass retention purge"} <= leaves
    assert len(leaves) >= 20


def test_every_option_and_argument_of_every_command_has_a_description() -> None:
    missing = [f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}"
               for path, parser, _ in _commands(build_parser()) for action in parser._actions
               if not isinstance(action, argparse._SubParsersAction)
               and (action.help is None or action.help is argparse.SUPPRESS or not str(action.help).strip())]
    assert missing == []


def test_every_leaf_command_help_has_an_example_and_its_exit_codes() -> None:
    for path, parser, leaf in _commands(build_parser()):
        if not leaf:
            continue
        text = parser.format_help()
        assert "Exit codes:\n  0 " in text and "\n  2    bad input" in text, " ".join(path)
        assert f"Example:\n  {' '.join(path)}" in text or "| jitpass" in text, " ".join(path)


@pytest.mark.parametrize("words", [("items", "add"), ("items", "rotate"), ("audit", "verify")])
def test_commands_that_read_stdin_say_the_format(words: tuple[str, ...]) -> None:
    parser = dict((p, q) for p, q, _ in _commands(build_parser()))[("jitpass", *words)]
    assert "Stdin:\n" in parser.format_help()


def test_help_of_a_real_process_lists_exit_codes(tmp_path: Path) -> None:
    done = Cli(tmp_path)("items", "show", "--help")
    assert done.returncode == 0 and "Exit codes:" in done.stdout and "--json" in done.stdout
    assert "print JSON" in done.stdout


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path)
    done = cli("items", "import", str(FIXTURES / "1password-export.csv"), "--vault", "acme")
    assert done.returncode == 0, done.stderr
    return cli


def test_items_show_prints_a_readable_record_without_python_reprs(cli: Cli) -> None:
    done = cli("items", "show", "acme-zendesk-admin")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "     tags: acme, support" in lines and " password: stored" in lines and "     totp: stored" in lines
    assert "    notes: Shared support admin." in lines and "           Rotate after each use, please." in lines
    for repr_mark in ("[", "]", "True", "False", "None", "'"):
        assert repr_mark not in done.stdout, repr_mark
    as_json = json.loads(cli("items", "show", "acme-zendesk-admin", "--json").stdout)
    assert as_json["tags"] == ["acme", "support"] and as_json["has_password"] is True


@pytest.mark.parametrize("words", [("items", "show", "acme-zendsk"), ("items", "remove", "acme-zendsk"),
                                   ("items", "rotate", "acme-zendsk")])
def test_an_unknown_item_gets_close_names_in_every_command(cli: Cli, words: tuple[str, ...]) -> None:
    done = cli(*words, stdin="new-password\n")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "There is no item called 'acme-zendsk'." in done.stderr
    assert "Did you mean: acme-zendesk-admin" in done.stderr


def test_rotate_names_an_unknown_item_before_asking_for_a_password(cli: Cli) -> None:
    done = cli("items", "rotate", "acme-zendsk")  # empty stdin: a prompt first would say "required"
    assert done.returncode == 2 and "There is no item called" in done.stderr and "required" not in done.stderr


def test_a_list_query_that_matches_nothing_suggests_close_names(cli: Cli) -> None:
    done = cli("items", "list", "acme-zendsk-admin")
    assert done.returncode == 0 and "no items" in done.stdout
    assert "did you mean acme-zendesk-admin?" in done.stderr


def test_a_new_vault_close_to_a_known_one_is_pointed_out(cli: Cli) -> None:
    done = cli("items", "add", "acme-wiki", "--vault", "acmee", stdin="pw\n\n")
    assert done.returncode == 0, done.stderr
    assert "note: vault 'acmee' is new" in done.stderr and "did you mean acme?" in done.stderr
    done = cli("items", "add", "acme-wiki2", "--vault", "acme", stdin="pw\n\n")
    assert done.returncode == 0 and "note:" not in done.stderr


def test_an_unknown_vault_in_a_report_filter_gets_close_names(cli: Cli) -> None:
    done = cli("report", "--vault", "acmee", "--no-verify")
    assert done.returncode == 2 and "acme" in done.stderr and "Traceback" not in done.stderr

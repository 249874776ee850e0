"""The README's commands table against the CLI: every command is in it, every option it shows exists.

Read from the Typer app's command objects (serving/cli.py and its experiment sub-app), no
subprocess: the table is what a reader copies, so an option renamed in the code, or a command
added without a row, fails here. The same for the configuration table: every key of
``serving/config.py: AppConfig`` has a row, every row a key, and every default is the shipped one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from partnerscore.serving.cli import app

README = Path(__file__).parents[1] / "README.md"
HEADER = "| command | what it does |"
OPTION = re.compile(r"--[a-z][a-z0-9-]*")


def cli_commands() -> dict[tuple[str, ...], set[str]]:
    """Command path (``("score",)``, ``("experiment", "plan")``) -> its long options."""
    found: dict[tuple[str, ...], set[str]] = {}

    def walk(command, path: tuple[str, ...]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            if sub.hidden:
                continue
            found[(*path, name)] = {
                o for p in sub.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")
            }
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def table_rows(text: str) -> list[tuple[str, str]]:
    """(command cell, description cell) of every row of the commands table (``\\|`` inside a
    cell read as ``|``)."""
    lines = text.splitlines()
    start = lines.index(HEADER)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.replace("\\|", "|").strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows.append((cells[0], " | ".join(cells[1:])))
    return rows


def cell_entries(cell: str, groups: set[str]) -> list[tuple[tuple[str, ...], set[str], str]]:
    """(command path, options written for it, the code span) for every command of a cell.

    A cell may hold several code spans (``whatif ...`` | ``whatif --policy ...``), each naming
    its command with or without ``partnerscore``; a group's subcommands may be given as
    alternatives (``experiment assign|analyze|plan|stop``).
    """
    spans = re.findall(r"`([^`]+)`", cell)
    assert spans, f"commands table: a row without a command: {cell!r}"
    entries = []
    for span in spans:
        words = span.split()
        if words[0] == "partnerscore":
            words = words[1:]
        paths = [(words[0],)]
        if words[0] in groups and len(words) > 1 and not words[1].startswith("-"):
            paths = [(words[0], sub) for sub in words[1].split("|")]
        entries += [(path, set(OPTION.findall(span)), span) for path in paths]
    return entries


def table_entries(text: str, groups: set[str]) -> list[tuple[tuple[str, ...], set[str], str]]:
    """:func:`cell_entries` of every row of the table."""
    return [entry for cell, _ in table_rows(text) for entry in cell_entries(cell, groups)]


def described_options(text: str, groups: set[str]) -> list[tuple[list[tuple[str, ...]], set]]:
    """(the row's commands, the options its description names) for every row."""
    return [
        ([path for path, _, _ in cell_entries(cell, groups)], set(OPTION.findall(description)))
        for cell, description in table_rows(text)
    ]


@pytest.fixture(scope="module")
def commands() -> dict[tuple[str, ...], set[str]]:
    return cli_commands()


@pytest.fixture(scope="module")
def entries(commands) -> list[tuple[tuple[str, ...], set[str], str]]:
    groups = {path[0] for path in commands if len(path) > 1}
    return table_entries(README.read_text(encoding="utf-8"), groups)


def test_the_cli_has_the_commands_the_test_walks(commands):
    # the walk reaches the sub-app: a broken walk would make the next tests vacuous
    assert {("score",), ("experiment",), ("experiment", "analyze")} <= set(commands)
    assert "--no-history" in commands["score",]


def test_every_command_has_a_row(commands, entries):
    listed = {path for path, _, _ in entries}
    listed |= {path[:1] for path in listed}  # a group is listed through its subcommands
    missing = sorted(" ".join(path) for path in set(commands) - listed)
    assert not missing, f"commands missing from the README's commands table: {missing}"


def test_every_option_in_the_table_exists_on_its_command(commands, entries):
    wrong = []
    for path, options, span in entries:
        if path not in commands:
            wrong.append(f"{' '.join(path)}: no such command ({span!r})")
            continue
        wrong += [
            f"{' '.join(path)} {option}: no such option"
            for option in sorted(options - commands[path])
        ]
    assert not wrong, "README commands table: " + "; ".join(wrong)


def test_every_option_a_description_names_exists_on_its_rows_command(commands):
    groups = {path[0] for path in commands if len(path) > 1}
    wrong = []
    for paths, options in described_options(README.read_text(encoding="utf-8"), groups):
        known = set().union(*(commands.get(path, set()) for path in paths))
        names = " / ".join(" ".join(path) for path in paths)
        wrong += [f"{names} {option}: no such option" for option in sorted(options - known)]
    assert not wrong, "README commands table, descriptions: " + "; ".join(wrong)


def test_the_parser_reads_alternatives_and_second_spans():
    text = (
        f"{HEADER}\n|---|---|\n"
        "| `partnerscore experiment assign\\|plan` | x |\n"
        "| `partnerscore whatif --partner ID` \\| `whatif --policy CONFIG` | y |\n"
        "| `partnerscore score (--as-of DATE \\| --at-age DAYS) --out FILE` | z |\n"
        "\nafter the table\n"
    )
    got = table_entries(text, {"experiment"})
    assert got == [
        (("experiment", "assign"), set(), "partnerscore experiment assign|plan"),
        (("experiment", "plan"), set(), "partnerscore experiment assign|plan"),
        (("whatif",), {"--partner"}, "partnerscore whatif --partner ID"),
        (("whatif",), {"--policy"}, "whatif --policy CONFIG"),
        (
            ("score",),
            {"--as-of", "--at-age", "--out"},
            "partnerscore score (--as-of DATE | --at-age DAYS) --out FILE",
        ),
    ]


# ------------------------------------------------------------------ the configuration table

CONFIG_HEADER = "| key | default | meaning |"


def config_table(text: str) -> dict[str, str]:
    """``section.key`` -> its default cell, for every row of the README's configuration table."""
    lines = text.splitlines()
    start = lines.index(CONFIG_HEADER)
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        key, default, _ = (c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1])
        rows[key.strip("`")] = default
    return rows


def config_keys() -> dict[str, object]:
    """``section.key`` -> shipped default of every key a config file may set (two levels)."""
    from partnerscore.serving.config import AppConfig

    shipped = AppConfig()
    return {
        f"{section}.{key}": getattr(getattr(shipped, section), key)
        for section, field in AppConfig.model_fields.items()
        for key in field.annotation.model_fields
    }


def test_every_config_key_has_a_row_and_every_row_a_key():
    rows = set(config_table(README.read_text(encoding="utf-8")))
    keys = set(config_keys())
    assert not keys - rows, f"config keys missing from the README's table: {sorted(keys - rows)}"
    assert not rows - keys, f"README config table: no such key: {sorted(rows - keys)}"


def test_every_default_in_the_config_table_is_the_shipped_one():
    import yaml
    from pydantic import BaseModel

    from partnerscore.serving.config import AppConfig

    shipped = config_keys()
    wrong = []
    for key, cell in config_table(README.read_text(encoding="utf-8")).items():
        if key not in shipped:
            continue  # the test above names it
        section, name = key.split(".")
        if not (cell.startswith("`") and cell.endswith("`")):
            # a list of records (bands, milestones) is shown by an example elsewhere
            records = isinstance(shipped[key], tuple) and shipped[key]
            if not (records and isinstance(shipped[key][0], BaseModel)):
                wrong.append(f"{key}: default {cell!r} is not a value")
            continue
        value = yaml.safe_load(cell.strip("`"))
        read = getattr(getattr(AppConfig.model_validate({section: {name: value}}), section), name)
        if read != shipped[key]:
            wrong.append(f"{key}: README {cell}, shipped {shipped[key]!r}")
    assert not wrong, "README config table: " + "; ".join(wrong)

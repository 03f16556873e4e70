#!/usr/bin/env python3
"""Write the command reference, docs/cli.md, from the commands' own --help.

    python scripts/cli_reference.py          # rewrite docs/cli.md
    python scripts/cli_reference.py --check  # exit 1 if it is out of date

tests/test_cli_reference.py runs the check, so the reference cannot drift
from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from bqspool.loader import exit_codes
from bqspool.loader.cli import main

OUT = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def walk(cmd: click.Command, path: list[str]):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            yield from walk(cmd.commands[name], path + [name])


def render() -> str:
    out = [
        "# Command reference",
        "",
        "Generated from `--help` by `python scripts/cli_reference.py`; a test checks it is current.",
        "",
    ]
    out += [
        "## Exit codes",
        "",
        "The same for every command, and stable (`bqspool.loader.exit_codes`). Retryable codes (3, 4) mean",
        "nothing was lost: run the same command again later.",
        "",
        "| code | meaning |",
        "| --- | --- |",
        *(f"| {code} | {meaning} |" for code, meaning in exit_codes.TABLE),
        "",
        "## Output",
        "",
        "Commands that print rows (`query`, `dead-letters list`) print an aligned table; `--json` prints one",
        "JSON array, `--nl` one JSON object per line, `--csv` comma-separated values. Commands that print a",
        "report (`status`, `ship`, `commit`, `drain`, `verify`, `restore`, `cost`, `monitor`) print lines for",
        "people; `--json` prints one JSON object. In JSON, times are ISO 8601 (UTC) and a payload is the JSON",
        "it holds.",
        "",
        "## Settings",
        "",
        "Global options (`--config`, `--buffer`, `--schemas`) go before or after the command's name;",
        "every command resolves its settings the same way: defaults, then `bqspool.toml` (or `--config` /",
        "`BQSPOOL_CONFIG`), then `BQSPOOL_*`, then the flags.",
        "",
    ]
    for path, cmd in walk(main, ["bqspool"]):
        ctx = click.Context(cmd, info_name=" ".join(path))
        out += [f"## {' '.join(path)}", "", "```text", cmd.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(out)


def main_() -> int:
    text = render()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python scripts/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main_())

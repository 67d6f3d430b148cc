"""How the listing commands (``flywheel sims list``, ``flywheel status``) print their tables.

A rich table at a terminal; plain tab-separated columns, header first, when stdout is a pipe
or a file, so that scripts need not strip box-drawing characters; one JSON document with
``--json``, which is the form to parse (the columns are the table's text, formatted for eyes).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence


def add_json_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of a table")


def plain() -> bool:
    """Whether to print plain columns: stdout is read by a program, not a person."""
    return not sys.stdout.isatty()


def print_columns(header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Tab-separated columns; a tab or newline inside a cell would split it, so they become spaces."""
    for row in [header, *rows]:
        print("\t".join(" ".join(str(cell).split()) for cell in row))


def print_json(document) -> None:
    print(json.dumps(document, indent=2))

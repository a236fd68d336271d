"""The code examples of README.md, so tests run exactly what the README shows."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
_EXAMPLE = re.compile(r"<!-- example: (\w+) -->\n```\w+\n(.*?)```", re.DOTALL)


def example(name: str) -> str:
    examples: dict[str, str] = dict(_EXAMPLE.findall(README.read_text()))
    return examples[name]


_FILE = re.compile(r"<!-- file: (\S+) -->\n```\w+\n(.*?)```", re.DOTALL)


def file_block(path: str) -> str:
    """The README block that claims to be the file at `path`."""
    blocks: dict[str, str] = dict(_FILE.findall(README.read_text()))
    return blocks[path]

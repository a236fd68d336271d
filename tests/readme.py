"""The code of README.md and docs/*.md, so tests run exactly what the documentation shows.

`<!-- example: NAME -->` before a code block marks an example a test runs; `<!-- file: PATH -->`
marks a block that must be, byte for byte, the file at PATH; `<!-- excerpt: PATH -->` one that
must appear in it verbatim.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
_EXAMPLE = re.compile(r"<!-- example: (\w+) -->\n```\w+\n(.*?)```", re.DOTALL)
_FILE = re.compile(r"<!-- file: (\S+) -->\n```\w+\n(.*?)```", re.DOTALL)
_EXCERPT = re.compile(r"<!-- excerpt: (\S+) -->\n```\w+\n(.*?)```", re.DOTALL)


def _blocks(pattern: re.Pattern[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for document in DOCUMENTS:
        for name, body in pattern.findall(document.read_text()):
            assert name not in found, f"{name} is marked twice"
            found[name] = body
    return found


def excerpts() -> list[tuple[str, str]]:
    return [
        (path, body)
        for document in DOCUMENTS
        for path, body in _EXCERPT.findall(document.read_text())
    ]


def example(name: str) -> str:
    return _blocks(_EXAMPLE)[name]


def file_block(path: str) -> str:
    """The documentation block that claims to be the file at `path`."""
    return _blocks(_FILE)[path]


def file_blocks() -> dict[str, str]:
    return _blocks(_FILE)

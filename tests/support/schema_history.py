"""Keep `schemas/history/` in step with the git history of every schema.

The codec reads a message written with an earlier version of a schema only if that version
is in `schemas/history/` (named `<Name>.<fingerprint hex>.avsc`, the text as committed).
`python -m tests.support.schema_history` writes every committed version that is missing (the
current version, the working tree's, needs no entry); `tests/schemas/test_history.py` fails
while one is missing. Named by fingerprint, two branches that add the same version add the
same file, so they merge without a conflict.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fastavro

from schemas import codec

REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True,
                          text=True, timeout=20).stdout


def committed_texts(name: str) -> list[tuple[str, str]]:
    """(commit, text) of every committed version of `schemas/<name>.avsc`, newest first."""
    rel = f"schemas/{name}.avsc"
    return [(c[:10], _git("show", f"{c}:{rel}"))
            for c in _git("log", "--format=%H", "--", rel).split()]


def missing() -> dict[Path, str]:
    """History files to write: path -> the committed text of that version."""
    out: dict[Path, str] = {}
    for name in codec.NAMES:
        current = codec.fingerprint(name)
        for _commit, text in committed_texts(name):
            fp = codec.fingerprint_of(fastavro.parse_schema(json.loads(text)))
            path = codec.HISTORY_DIR / f"{name}.{fp.hex()}.avsc"
            if fp != current and not path.exists():
                out[path] = text
    return out


def main() -> int:
    todo = missing()
    for path, text in todo.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO)}")
    if not todo:
        print("schemas/history is complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())

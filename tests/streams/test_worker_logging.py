"""The worker's log level holds for the libraries too: Faust's start-up spinner set the root
logger to DEBUG at `--loglevel warn` and above, so every aiokafka debug call built a record
(~9% of the worker's CPU, bench/README.md, issue 17). In a subprocess: the logging set-up
replaces the root logger's handlers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CODE = """
import logging, sys
from core.settings import Settings
from streams.app import create_app, make_worker
app = create_app(Settings(var_dir=sys.argv[1]))
fetcher = logging.getLogger("aiokafka.consumer.fetcher")
with open(sys.argv[1] + "/levels.txt", "w") as out:  # stdout and stderr go to the log now
    for level in sys.argv[2:]:
        make_worker(app, level)._setup_logging()  # what execute_from_commandline runs first
        print(level, logging.getLevelName(logging.root.level),
              fetcher.isEnabledFor(logging.DEBUG), file=out)
"""


def test_the_root_logger_keeps_the_workers_level(tmp_path: Path) -> None:
    levels = {"warn": "WARNING False", "error": "ERROR False", "info": "INFO False",
              "debug": "DEBUG True"}
    out = subprocess.run([sys.executable, "-c", CODE, str(tmp_path), *levels], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = dict(line.split(" ", 1) for line in
               (tmp_path / "levels.txt").read_text().splitlines())
    assert got == levels

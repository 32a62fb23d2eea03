"""`python -m streams [--loglevel LEVEL]`: the same as `hookstream worker`."""

from __future__ import annotations

import argparse

from streams.app import run_worker

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m streams")
    parser.add_argument("--loglevel", default="info")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    run_worker(loglevel=args.loglevel, host=args.host)

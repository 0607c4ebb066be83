"""Helpers of the practice tests: example paths, the `netc` command, JSON lines."""

import json
import os
import subprocess
import sys

EXAMPLES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "examples"))


def example(name: str) -> str:
    return os.path.join(EXAMPLES, name)


def run_netc(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "netc", *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=cwd, env=env)


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]

"""Every subcommand of the one CLI exists and documents itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

from recsys_stream.cli import build_parser

COMMANDS = ["broker", "topics", "worker", "trainer", "serve", "produce", "recommend", "models",
            "demo", "status"]


def test_all_commands_are_registered():
    action = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(COMMANDS) <= set(action.choices)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_says_what_each_command_does(command):
    out = subprocess.run([sys.executable, "-m", "recsys_stream.cli", command, "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"recsys-stream {command}" in out.stdout and len(out.stdout.splitlines()) > 3

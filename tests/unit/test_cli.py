"""Every subcommand of the one CLI exists and documents itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

from recsys_stream.cli import build_parser

COMMANDS = ["broker", "topics", "worker", "items", "trainer", "serve", "produce", "recommend", "predict",
            "models",
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


def test_trainer_refuses_a_bad_events_file_with_a_message(tmp_path, capsys):
    """A MovieLens file has no tenant column: without --tenant the trainer says so (no
    traceback), before it touches a broker or the model store."""
    from recsys_stream.cli import main
    from recsys_stream.stack import write_config
    config = write_config(tmp_path / "c.toml", "127.0.0.1:9", tmp_path, "127.0.0.1:0")
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("userId,movieId,rating,timestamp\n1,10,4.0,964982703\n")
    with pytest.raises(SystemExit) as e:
        main(["trainer", "--config", str(config), "--once", "--events-file", str(ratings)])
    assert str(e.value) == f"trainer: {ratings}: a MovieLens file needs a tenant"
    bad = tmp_path / "events.jsonl"
    bad.write_text('{"tenant": "acme", "user_id": "u", "item_id": "i", "type": "wink", '
                   '"timestamp_ms": 5}\n')
    with pytest.raises(SystemExit) as e:
        main(["trainer", "--config", str(config), "--once", "--events-file", str(bad)])
    assert str(e.value).startswith(f"trainer: {bad}:1: ValueError: unknown event type 'wink'")
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())

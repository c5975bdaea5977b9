"""The README stays true: its configuration table lists every setting, and its first screen the two commands."""

from __future__ import annotations

from pathlib import Path

from jobyard.config import ENV_PREFIX, Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_documented_in_the_configuration_table() -> None:
    missing = [
        f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields if f"`{ENV_PREFIX}{name.upper()}`" not in README
    ]
    assert missing == []


def test_the_first_screen_gives_the_run_and_test_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:20])
    assert "jobyard dev" in first_screen and "python -m pytest" in first_screen

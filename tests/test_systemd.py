"""The service unit: sandboxed to an exposure of 3.0 or lower, valid, and a crash loop stops.

``systemd-analyze`` runs offline on the file (no systemd needed as PID 1); the tests
skip with the reason where it is missing or too old for ``--offline``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "flowedge@.service"
MAX_EXPOSURE = 3.0
INSTALLED_BINARY = "/opt/flowedge/.venv/bin/flowedge"


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze not found (a systemd distribution provides it)")
    result = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)
    if "unrecognized option" in result.stderr or "Unknown command" in result.stderr:
        pytest.skip(f"systemd-analyze is too old for {args[:2]}: {result.stderr.strip()}")
    return result


def settings(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_exposure_is_at_most_3() -> None:
    result = analyze("security", "--offline=true", str(UNIT))
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_unit_verifies(tmp_path: Path) -> None:
    """``verify`` also checks the ExecStart binary exists: point it at this Python."""
    unit = tmp_path / "flowedge@test.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_BINARY, sys.executable))
    result = analyze("verify", str(unit))
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_crash_loops_stop_and_config_errors_do_not_restart() -> None:
    unit = settings(UNIT)
    assert int(unit["StartLimitIntervalSec"][0]) > 0 and int(unit["StartLimitBurst"][0]) > 0
    assert set(unit["RestartPreventExitStatus"][0].split()) == {"2", "4"}
    assert unit["CapabilityBoundingSet"] == [""] and "PrivateDevices" not in unit

"""`vitrina schemas check` guards every schema change: the repo's schemas pass, a breaking change fails
with the field and the rule it breaks (CI runs this file)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from schemas import SCHEMA_DIR

ROOT = Path(__file__).resolve().parents[2]


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", "schemas", "check", *args], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def schema_copy(tmp_path: Path) -> Path:
    """A copy of schemas/ (current + history) to break."""
    target = tmp_path / "schemas"
    (target / "history").mkdir(parents=True)
    for path in SCHEMA_DIR.glob("*.avsc"):
        shutil.copy(path, target / path.name)
    for path in (SCHEMA_DIR / "history").glob("*.avsc"):
        shutil.copy(path, target / "history" / path.name)
    return target


def edit(directory: Path, name: str, change) -> None:
    path = directory / f"{name}.avsc"
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema))


@pytest.mark.parametrize("level", ["BACKWARD", "FULL"])
def test_repository_schemas_read_every_history_version(level: str) -> None:
    done = check("--level", level)
    assert done.returncode == 0, done.stdout + done.stderr
    history = sorted(p.name for p in (SCHEMA_DIR / "history").glob("*.avsc"))
    assert history, "schemas/history/ is empty: nothing guards the evolution"
    for name in history:
        assert f"history/{name}" in done.stdout
    pairs = len(history) * (2 if level == "FULL" else 1)
    assert f"{pairs} version pair(s) checked, 0 failure(s)" in done.stdout


def test_new_field_without_default_fails_with_the_reason(schema_copy: Path) -> None:
    edit(schema_copy, "vitrina.PlaybackEvent",
         lambda s: s["fields"].append({"name": "cdn_pop", "type": "string", "doc": "Edge location."}))
    done = check("--schemas", str(schema_copy))
    assert done.returncode == 1, done.stdout
    assert "FAIL  vitrina.PlaybackEvent: current reads data written with v1" in done.stdout
    assert "reader_field_missing_default_value" in done.stdout and "cdn_pop" in done.stdout
    assert "1 failure(s)" in done.stderr
    # the same field with a default is a compatible change
    edit(schema_copy, "vitrina.PlaybackEvent", lambda s: s["fields"][-1].update(type=["null", "string"], default=None))
    assert check("--schemas", str(schema_copy)).returncode == 0


def test_changed_type_fails_with_the_reason(schema_copy: Path) -> None:
    def narrow(schema: dict) -> None:
        next(f for f in schema["fields"] if f["name"] == "position_ms")["type"] = "int"  # long -> int cannot read
    edit(schema_copy, "vitrina.PlaybackEvent", narrow)
    done = check("--schemas", str(schema_copy))
    assert done.returncode == 1
    assert "type_mismatch" in done.stdout and "position_ms" in done.stdout


def test_removed_field_breaks_old_readers_only_where_forward_is_promised(schema_copy: Path) -> None:
    """Dropping a field v1 requires (no default) is BACKWARD-compatible, not FORWARD: v1 readers fail."""
    edit(schema_copy, "vitrina.PlaybackEvent", lambda s: s.update(fields=[f for f in s["fields"] if f["name"] != "os"]))
    assert check("--schemas", str(schema_copy)).returncode == 0
    done = check("--schemas", str(schema_copy), "--level", "FULL")
    assert done.returncode == 1
    assert "FAIL  vitrina.PlaybackEvent: v1 readers read data written with current" in done.stdout
    assert "'os'" in done.stdout or "os" in done.stdout.split("reader_field_missing_default_value", 1)[1]


def test_removed_enum_symbol_without_default_fails(schema_copy: Path) -> None:
    def drop(schema: dict) -> None:
        for f in schema["fields"]:
            if f["name"] == "event_type":
                f["type"]["symbols"].remove("SEEK")
                f["type"].pop("default")
    edit(schema_copy, "vitrina.PlaybackEvent", drop)
    done = check("--schemas", str(schema_copy))
    assert done.returncode == 1
    assert "missing_enum_symbols" in done.stdout and "SEEK" in done.stdout


def test_history_version_without_current_schema_fails(schema_copy: Path) -> None:
    (schema_copy / "history" / "vitrina.PlaybackEvent.v1.avsc").rename(schema_copy / "history" / "vitrina.Gone.v1.avsc")
    done = check("--schemas", str(schema_copy))
    assert done.returncode == 1
    assert "vitrina.Gone" in done.stdout and "no current schema" in done.stdout

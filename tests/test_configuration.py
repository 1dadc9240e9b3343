"""docs/configuration.md lists exactly the settings whatschat/config.py reads."""

from __future__ import annotations

import re
from pathlib import Path

from whatschat.config import Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_every_setting_is_documented_and_nothing_else() -> None:
    documented: set[str] = set()
    for line in DOC.read_text().splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            documented.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    names = {str(field.validation_alias) for field in Settings.model_fields.values()}
    assert names - documented == set(), "settings missing from docs/configuration.md"
    assert documented - names == set(), "docs/configuration.md lists unknown settings"

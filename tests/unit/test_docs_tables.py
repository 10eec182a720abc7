"""The change type x carrier table in docs/change-types.md names, per row, the tests that prove it:
every named file must exist, run against the simulators (no unit test stands in for a row) and
exercise that change type, so the table cannot point at a test that was renamed or never had it."""
import re
from pathlib import Path

from bulkchange.models import ChangeType

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "change-types.md"


def proof_rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] in {t.value for t in ChangeType}:
            rows[cells[0]] = re.findall(r"`([^`]+\.py)`", cells[-1])
    return rows


def test_every_change_type_row_names_existing_tests_that_exercise_it():
    rows = proof_rows()
    assert set(rows) == {t.value for t in ChangeType}, "one row per change type"
    for change_type, files in rows.items():
        assert files, f"{change_type}: no test named"
        member = ChangeType(change_type).name
        for name in files:
            path = ROOT / "tests" / name
            assert path.is_file(), f"{change_type}: {name} does not exist"
            assert name.split("/")[0] in ("integration", "dags"), f"{change_type}: {name} is not an end-to-end test"
            text = path.read_text()
            assert change_type in text or member in text, f"{change_type}: {name} never uses it"

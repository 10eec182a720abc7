"""The benchmark table in docs/development.md is what ``bench.report`` makes of the run's JSON the
table names (path, SHA-256, commit): never edited by hand. No timing is asserted anywhere."""
import hashlib
import json
from pathlib import Path

import pytest

from bench import report

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "development.md"

RUN = {"machine": {"cpus": 2, "python": "3.11.7", "platform": "Linux", "scale": 1.0, "when": "2026-11-30 18:00:00 UTC",
                   "commit": "abc1234", "settings": "BULKCHANGE_BATCH_CONCURRENCY=3, rate shared through Redis"},
       "load": {"R1": {"before": 0.3, "after": 1.2}, "R3": {"before": 3.5, "after": 4.0}},
       "R1": {"devices": 10000, "wall_s": 207.6, "bound_s": 200.0, "ratio": 1.038},
       "R3": {"devices": 2000, "sqlite_cpu_ms_per_device": 1.9, "postgres_cpu_ms_per_device": 2.1}}


def test_the_docs_table_is_the_scripts_output_of_the_json_it_names():
    block = report.current_block(DOC.read_text())
    source, digest = report.source_of(block)
    path = ROOT / source
    assert path.is_file(), f"the table names {source}, which is not in the repository"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, "the JSON changed since the table was made"
    assert block == report.render_for(path, under_load=report.marked_under_load(block)), \
        "the table differs from what `python -m bench.report` makes of its JSON: regenerate it, never edit it"


def test_the_docs_table_is_well_formed():
    block = report.current_block(DOC.read_text())
    lines = block.split("\n")
    header = lines.index("| measure | result | target | load before / after | what was measured |")
    body = lines[header + 2:-1]
    assert lines[header + 1] == "|---|---|---|---|---|" and body and lines[-1] == report.END
    for line in body:
        assert line.startswith("| ") and line.endswith(" |") and line.count(" | ") == 4, line
    measures = {line.split(" | ")[0][2:].split()[0] for line in body}
    assert {"R1", "R3"} <= measures
    assert "commit=" in lines[0] and "`" in lines[1]  # the commit measured, in the marker and the header line


def test_a_figure_taken_under_load_is_marked_and_the_load_shown(tmp_path):
    md = report.markdown(RUN, source="x.json", digest="0" * 64)
    r1 = next(line for line in md.split("\n") if line.startswith("| R1 "))
    r3 = next(line for line in md.split("\n") if line.startswith("| R3 "))
    assert "**1.038** |" in r1 and "under load" not in r1 and "| 0.3 / 1.2 |" in r1
    assert "**SQLite 1.9 ms, PostgreSQL 2.1 ms** (under load)" in r3 and "| 3.5 / 4.0 |" in r3
    everything = report.markdown(RUN, source="x.json", digest="0" * 64, under_load=True)
    assert everything.split("\n")[0].endswith(" under-load -->")
    assert all("(under load)" in line for line in everything.split("\n") if line.startswith("| R"))


def test_the_script_rewrites_only_its_block_and_check_catches_a_hand_edit(tmp_path):
    results = tmp_path / "run.json"
    results.write_text(json.dumps(RUN))
    doc = tmp_path / "page.md"
    doc.write_text(f"before\n\n{report.BEGIN} source=old sha256={'0' * 64} commit=none -->\n| old |\n{report.END}\n\nafter\n")
    assert report.main([str(results), "--docs", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("before\n\n") and text.endswith("\n\nafter\n") and "| old |" not in text
    assert report.main([str(results), "--docs", str(doc), "--check"]) == 0
    doc.write_text(text.replace("**1.038**", "**1.010**"))  # a figure "improved" by hand
    assert report.main([str(results), "--docs", str(doc), "--check"]) == 1


def test_a_page_without_exactly_one_block_is_refused():
    with pytest.raises(ValueError):
        report.current_block("no table here")

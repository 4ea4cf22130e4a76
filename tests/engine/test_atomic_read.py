"""read_json_object: what a run or sweep directory holds is untrusted; damage reads as {}."""

from __future__ import annotations

from specrun.engine.atomic import read_json_object, write_json_atomic


def test_reads_back_what_was_written(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert read_json_object(tmp_path / "a.json") == {"x": 1}


def test_missing_torn_or_not_an_object_is_empty(tmp_path):
    (tmp_path / "torn.json").write_text('{"x": ', encoding="utf-8")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    for name in ("missing.json", "torn.json", "list.json"):
        assert read_json_object(tmp_path / name) == {}

"""The Recording: JSON round trip, version stamp, and one clear error for bad files."""

import json

import pytest

from tfdiag.recording import SCHEMA_VERSION, Recording, RecordingError, load, loads

from .conftest import DATA


def test_round_trip_keeps_every_section(tmp_path):
    original = load(DATA / "golden_recording.json")
    path = original.save(tmp_path / "r.json")
    again = load(path)
    assert again.to_dict() == original.to_dict()
    assert again.schema_version == SCHEMA_VERSION
    assert again.functions and again.calls and again.findings


def test_tool_sections_round_trip(tmp_path):
    recording = Recording(extra={"alternatives": [{"path": "predict_on_batch", "median_s": 0.001}]})
    again = load(recording.save(tmp_path / "r.json"))
    assert again.extra["alternatives"][0]["path"] == "predict_on_batch"


@pytest.mark.parametrize("text, message", [
    ("", "not valid JSON"),
    ('{"schema_version": 1, "functions": [', "not valid JSON"),
    ("[1, 2]", "not a tfdiag recording"),
    ('{"hello": 1}', "not a tfdiag recording"),
    ('{"schema_version": 99}', "newer than this tfdiag"),
    ('{"schema_version": "1"}', "not a tfdiag recording"),
    ('{"schema_version": 1, "functions": {}}', "'functions' should be a list"),
])
def test_bad_recordings_fail_with_one_line(tmp_path, text, message):
    path = tmp_path / "recording.json"
    path.write_text(text)
    with pytest.raises(RecordingError) as info:
        load(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_truncated_golden_recording_is_rejected(tmp_path):
    text = (DATA / "golden_recording.json").read_text()
    path = tmp_path / "cut.json"
    path.write_text(text[: len(text) // 2])
    with pytest.raises(RecordingError, match="truncated or corrupt"):
        load(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(RecordingError, match="no such file"):
        load(tmp_path / "absent.json")
    with pytest.raises(RecordingError, match="is a directory"):
        load(tmp_path)


def test_saved_json_has_the_design_fields():
    data = json.loads(loads((DATA / "golden_recording.json").read_text()).to_json())
    for key in ("schema_version", "environment", "functions", "calls", "phases", "findings"):
        assert key in data
    call = data["calls"][0]
    for key in ("api", "target", "call_site", "input_signature", "count", "median_s", "p95_s", "first_s", "phases"):
        assert key in call
    for finding in data["findings"]:
        for key in ("code", "severity", "title", "function", "call_site", "evidence", "estimated_savings_s", "fix"):
            assert key in finding
        assert finding["severity"] in ("high", "medium", "low")
    assert set(data["phases"]) >= {"wall_s", "input_processing", "data_adapter", "graph_creation",
                                    "kernel_execution", "output_processing", "other"}

import json
from pathlib import Path

import pytest

from zoo.files import write_json


def test_write_json_leaves_the_previous_file_whole_when_a_write_breaks_off(tmp_path, monkeypatch):
    """A process killed or a disk filled in the middle of writing metrics.json, run.json, state.json
    or a published manifest leaves the previous file as it was, and no temporary file."""
    path = write_json(tmp_path / "metrics.json", {"loss": 1.5})
    write = Path.write_text

    def half_then_fail(self, text, *args, **kwargs):
        write(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError("No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_json(path, {"loss": 1.25, "accuracy": 0.5})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"loss": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    write_json(path, {"loss": 1.25})
    assert json.loads(path.read_text()) == {"loss": 1.25} and path.read_text().endswith("\n")

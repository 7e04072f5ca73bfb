import json

import pytest

import vitedu
from vitedu import results
from vitedu.cli import main


def test_save_and_load_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("VITEDU_DATA", str(tmp_path))
    path = results.save("99_test", {"accuracy": 0.5}, budget="smoke", command="vitedu reproduce 99_test", wall_time_s=1.23)
    assert path == tmp_path / "results" / "99_test.json"
    record = results.load("99_test")
    assert record["numbers"] == {"accuracy": 0.5} and record["budget"] == "smoke"
    assert record["vitedu_version"] == vitedu.__version__ and record["wall_time_s"] == 1.2
    assert {"cpu", "cpu_count", "torch"} <= set(record["machine"]) and "git_commit" in record
    assert not list((tmp_path / "results").glob("*.part"))


def test_missing_results_say_how_to_make_them(tmp_path, monkeypatch):
    monkeypatch.setenv("VITEDU_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="vitedu reproduce 42_nothing --budget cpu"):
        results.load("42_nothing")


def test_reproduce_writes_the_ledger(tmp_path, capsys):
    output = tmp_path / "00.json"
    assert main(["reproduce", "00", "--budget", "smoke", "--output", str(output)]) == 0
    record = json.loads(output.read_text())
    assert record["chapter"] == "00_vit_in_minutes" and record["budget"] == "smoke"
    assert record["command"] == "vitedu reproduce 00_vit_in_minutes --budget smoke"
    numbers = record["numbers"]
    assert 0 <= numbers["test_accuracy"] <= 1 and numbers["config"]["train_images"] == 2000
    assert len(numbers["history"]) == numbers["config"]["epochs"]


def test_unknown_chapter_is_explained():
    with pytest.raises(KeyError, match="00_vit_in_minutes"):
        main(["reproduce", "77"])


def test_committed_reference_results_are_cpu_runs():
    for chapter in ("00_vit_in_minutes", "data_scenes"):
        record = results.load(chapter)
        assert record["budget"] == "cpu" and record["git_commit"]

"""`bench plot`: curves read from hand-written run folders."""

import json

import numpy as np
import pytest

from bench import cli, plot


def _write_run(folder, returns, rates):
    folder.mkdir(parents=True)
    with open(folder / "scores.jsonl", "w") as file:
        file.writelines(
            json.dumps({"step": 10 * (index + 1), "mode": "train", "return": value}) + "\n"
            for index, value in enumerate(returns)
        )
        file.writelines(json.dumps({"step": 40, "mode": "eval", "return": value}) + "\n" for value in (5.0, 7.0))
    with open(folder / "metrics.jsonl", "w") as file:
        file.writelines(
            json.dumps({"step": 20 * (index + 1), "context/change_rate": rate}) + "\n" for index, rate in enumerate(rates)
        )


def test_moving_average_grows_then_slides():
    np.testing.assert_allclose(plot.moving_average(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1.0, 2.0, 4.0, 6.0])


def test_curves_from_run_folders(tmp_path):
    run = tmp_path / "toy" / "reach" / "thick" / "abc" / "seed0"
    _write_run(run, [1.0, 2.0, 3.0, 4.0], [0.5, 0.25])
    curves = plot.run_curves(run, "return", ["context/change_rate"], window=2)
    np.testing.assert_array_equal(curves["train"][0], [10, 20, 30, 40])
    np.testing.assert_allclose(curves["train"][1], [1.0, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(curves["eval"][1], [6.0])  # the mean of the round's episodes
    np.testing.assert_allclose(curves["context/change_rate"][1], [0.5, 0.25])
    assert plot.run_label(run) == "thick seed0"
    twin = tmp_path / "toy" / "reach" / "thick" / "def" / "seed0"
    assert plot.run_labels([run, twin]) == ["thick seed0 (abc)", "thick seed0 (def)"]
    out = tmp_path / "curves.png"
    assert cli.main([
        "plot", str(tmp_path / "toy"), "--metrics", "context/change_rate", "--out", str(out),
    ]) == 0  # fmt: skip
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["plot", str(tmp_path / "nothing")]) != 0
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(plot.PlotError, match="no run folder"):
        plot.find_runs([str(tmp_path / "empty")])

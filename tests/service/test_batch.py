"""Offline scoring: every input row or file lands in the predictions or the errors file."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from service.schemas import validated_frame
from service.specs import KOBE
from service.versions import served_tag

pytestmark = pytest.mark.slow


def run_batch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.batch", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_tabular_scoring_writes_predictions_and_errors(quick_models, settings, tmp_path, suffix):
    import bentoml

    shots = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_prod.parquet").head(300).reset_index(drop=True)
    shots["loc_x"] = shots["loc_x"].astype(float)
    shots.loc[3, "action_type"] = "Moonshot"
    shots.loc[7, "loc_x"] = np.nan
    shots.loc[11, "period"] = 99
    source = tmp_path / f"shots.{suffix}"
    shots.to_parquet(source) if suffix == "parquet" else shots.to_csv(source, index=False)
    output = tmp_path / f"predictions.{suffix}"

    done = run_batch("kobe", source, output)

    assert done.returncode == 0, done.stderr
    assert "100%" in done.stderr  # the progress bar ran to the end
    predictions = pd.read_parquet(output) if suffix == "parquet" else pd.read_csv(output)
    errors = pd.read_csv(tmp_path / "predictions.errors.csv")
    assert errors["row"].tolist() == [3, 7, 11]
    assert errors["shot_id"].tolist() == shots.loc[[3, 7, 11], "shot_id"].tolist(), "ids carried to the errors"
    assert "action_type" in errors.loc[0, "error"] and "loc_x" in errors.loc[1, "error"]
    assert "period" in errors.loc[2, "error"]
    assert len(errors.loc[0, "error"]) < 300, "an unknown category names a few allowed values, not all 57"
    assert "'Alley Oop Dunk Shot'" in errors.loc[0, "error"] and "57 values" in errors.loc[0, "error"]
    assert sorted(predictions["row"].tolist() + errors["row"].tolist()) == list(range(300))
    kept = shots.drop(index=[3, 7, 11])
    assert predictions["shot_id"].tolist() == kept["shot_id"].tolist(), "ids carried to the predictions"
    tag = bentoml.models.get(served_tag("kobe")).tag
    assert set(predictions["model"]) == {str(tag)}
    good = shots.drop(index=[3, 7, 11])
    expected = bentoml.sklearn.load_model(tag).predict_proba(validated_frame(good.to_dict("records"), KOBE))
    np.testing.assert_allclose(predictions[["probability_missed", "probability_made"]].to_numpy(), expected, rtol=1e-6)
    assert (predictions["label"] == np.where(expected[:, 1] > expected[:, 0], "made", "missed")).all()


def test_another_id_column_is_carried_and_a_missing_one_is_a_clear_error(quick_models, settings, tmp_path):
    shots = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_prod.parquet").head(20)
    source = tmp_path / "shots.csv"
    shots.drop(columns=["shot_id"]).to_csv(source, index=False)

    done = run_batch("kobe", source, tmp_path / "by_event.csv", "--id-column", "game_event_id")
    assert done.returncode == 0, done.stderr
    predictions = pd.read_csv(tmp_path / "by_event.csv")
    assert predictions["game_event_id"].tolist() == shots["game_event_id"].tolist()
    assert "shot_id" not in predictions

    done = run_batch("kobe", source, tmp_path / "default.csv")  # no shot_id in this file: row numbers only
    assert done.returncode == 0, done.stderr
    assert list(pd.read_csv(tmp_path / "default.csv").columns[:2]) == ["row", "label"]

    done = run_batch("kobe", source, tmp_path / "out.csv", "--id-column", "play_id")
    assert done.returncode != 0
    assert "play_id" in done.stderr and "Traceback" not in done.stderr


def test_missing_columns_are_a_clear_error(quick_models, tmp_path):
    source = tmp_path / "flowers.csv"
    pd.DataFrame({"sepal_length": [5.0]}).to_csv(source, index=False)
    done = run_batch("iris", source, tmp_path / "out.csv")
    assert done.returncode != 0
    assert "sepal_width" in done.stderr and "Traceback" not in done.stderr


def test_image_folder_scoring_reports_unreadable_files(quick_models, malaria_image_paths, tmp_path):
    folder = tmp_path / "cells"
    (folder / "nested").mkdir(parents=True)
    for path in malaria_image_paths["Uninfected"][:6]:
        (folder / "nested" / path.name).write_bytes(path.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "notes.txt").write_text("not an image")
    output = tmp_path / "cells.csv"

    done = run_batch("malaria", folder, output)

    assert done.returncode == 0, done.stderr
    predictions = pd.read_csv(output)
    errors = pd.read_csv(tmp_path / "cells.errors.csv")
    assert len(predictions) == 6 and all(f.startswith("nested/") for f in predictions["file"])
    assert sorted(errors["file"]) == ["broken.png", "notes.txt"]
    assert set(predictions["model"]) == {served_tag("malaria")}

    renamed = run_batch("malaria", folder, tmp_path / "by_path.csv", "--id-column", "path")
    assert renamed.returncode == 0, renamed.stderr
    assert sorted(pd.read_csv(tmp_path / "by_path.csv")["path"]) == sorted(predictions["file"])
    assert sorted(pd.read_csv(tmp_path / "by_path.errors.csv")["path"]) == ["broken.png", "notes.txt"]
    assert set(predictions["label"]) <= {"Parasitized", "Uninfected"}
    assert np.allclose(predictions[["probability_Parasitized", "probability_Uninfected"]].sum(axis=1), 1, atol=1e-5)

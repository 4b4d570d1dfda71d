"""Offline scoring with a served model from the BentoML store.

    python -m service.batch kobe shots.parquet predictions.parquet
    python -m service.batch malaria cell_images/ predictions.csv

Tabular input is a CSV or Parquet file; image input is a folder (searched recursively).
Every input row or file ends up in exactly one place: the predictions file, or the errors
file (row or file, and why), so nothing is dropped silently. Both files name each input:
tables by row number and the spec's id column (kobe: `shot_id`; `--id-column` picks
another), folders by the file's path within the folder (column `file`, or `--id-column`).
The model is the one the service would serve (service/versions.py); `--version` picks another.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError
from tqdm import tqdm

from service import versions
from service.errors import InvalidInput
from service.preprocessing import encoded_image_to_array, model_input_from_image
from service.runtime import ServedModel, cpu_count, load
from service.schemas import RECORD_MODELS, describe
from service.specs import SPECS, ModelSpec


def _parquet_engine(path: Path) -> None:
    """Parquet needs pyarrow, which the serving image leaves out (156 MB): say so plainly."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise SystemExit(f"{path}: Parquet needs pyarrow (pip install pyarrow); "
                         "the serving image reads and writes CSV only") from None


def read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        _parquet_engine(path)
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise SystemExit(f"{path}: expected a .csv or .parquet file")


def write_table(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        _parquet_engine(path)
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        raise SystemExit(f"{path}: expected a .csv or .parquet output file")


def row_keys(frame: pd.DataFrame, spec: ModelSpec, id_column: str | None) -> pd.DataFrame:
    """What names each row in the outputs: its number, and its id when the input has one."""
    keys = pd.DataFrame({"row": range(len(frame))})
    column = id_column or spec.id_column
    if column is not None and column in frame.columns:
        keys[column] = frame[column].to_numpy()
    elif id_column is not None:
        raise SystemExit(f"the input has no column {id_column!r} (--id-column)")
    return keys


def validate_rows(frame: pd.DataFrame, spec: ModelSpec) -> tuple[list[int], list[dict], list[dict]]:
    """(row numbers, clean records) of the valid rows, and (row number, reason) of the others."""
    missing = [name for name in spec.feature_names if name not in frame.columns]
    if missing:
        raise SystemExit(f"the input has no column(s) {missing}; {spec.name} needs {spec.feature_names}")
    record_model = RECORD_MODELS[spec.name]
    columns = frame[spec.feature_names].astype(object).where(frame[spec.feature_names].notna(), None)
    kept, records, errors = [], [], []
    for number, values in enumerate(columns.itertuples(index=False, name=None)):
        try:
            records.append(record_model.model_validate(dict(zip(spec.feature_names, values, strict=True))).model_dump())
            kept.append(number)
        except ValidationError as exc:
            errors.append({"row": number, "error": describe(exc)})
    return kept, records, errors


def read_images(folder: Path, spec: ModelSpec, key: str = "file") -> tuple[list[str], list[np.ndarray], list[dict]]:
    """(paths, model inputs) of the readable files, and (path, reason) of the others."""
    assert spec.image is not None
    names, arrays, errors = [], [], []
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in tqdm(files, desc="reading images", unit="img", file=sys.stderr):
        name = str(path.relative_to(folder))
        try:
            arrays.append(model_input_from_image(encoded_image_to_array(path.read_bytes(), spec.image), spec))
            names.append(name)
        except InvalidInput as exc:
            errors.append({key: name, "error": str(exc)})
    return names, arrays, errors


def predict_in_chunks(model: ServedModel, rows: list, chunk: int) -> np.ndarray:
    parts = []
    for start in tqdm(range(0, len(rows), chunk), desc=f"scoring with {model.tag}", unit="chunk", file=sys.stderr):
        part = rows[start:start + chunk]
        parts.append(model.predict_proba(model.combine([part] if model.spec.task == "tabular" else [np.stack(part)])))
    return np.concatenate(parts) if parts else np.empty((0, len(model.spec.class_names)))


def predictions_frame(model: ServedModel, keys: pd.DataFrame, probabilities: np.ndarray) -> pd.DataFrame:
    names = model.spec.class_names
    frame = keys.reset_index(drop=True).copy()
    frame["label"] = [names[i] for i in probabilities.argmax(axis=1)] if len(probabilities) else []
    for index, name in enumerate(names):
        frame[f"probability_{name}"] = probabilities[:, index]
    frame["model"] = model.tag
    return frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.batch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=list(SPECS))
    parser.add_argument("input", type=Path, help="CSV/Parquet file, or a folder of images")
    parser.add_argument("output", type=Path, help="predictions file (.csv or .parquet)")
    parser.add_argument("--errors", type=Path, help="errors file (default: OUTPUT with .errors.csv)")
    parser.add_argument("--version", help="model version in the BentoML store (default: the one the service "
                                               "serves: NAME_MODEL_VERSION, else the champion)")
    parser.add_argument("--id-column", help="the column that names each row in the outputs (default: the "
                                            "model's, e.g. kobe's shot_id); for a folder, the name of the path column")
    parser.add_argument("--chunk-size", type=int, default=2048)
    args = parser.parse_args(argv)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    import bentoml

    spec = SPECS[args.model]
    errors_path = args.errors or args.output.with_name(args.output.stem + ".errors.csv")
    try:
        tag = f"{spec.name}:{args.version}" if args.version else versions.served_tag(spec.name)
        stored = bentoml.models.get(tag)
    except versions.NoServableModel as exc:
        print(exc, file=sys.stderr)
        return 2
    except bentoml.exceptions.NotFound:
        print(f"no model {tag} in the BentoML store; train it first", file=sys.stderr)
        return 2
    model = load(spec, stored, cpu_count())

    if args.input.is_dir():
        if spec.image is None:
            raise SystemExit(f"{spec.name} takes a table, not a folder of images")
        key = args.id_column or "file"
        names, rows, errors = read_images(args.input, spec, key)
        keys = pd.DataFrame({key: names})
        error_columns = [key, "error"]
    else:
        frame = read_table(args.input)
        all_keys = row_keys(frame, spec, args.id_column)
        kept, rows, row_errors = validate_rows(frame, spec)
        keys = all_keys.iloc[kept]
        errors = [{**all_keys.iloc[e["row"]].to_dict(), "error": e["error"]} for e in row_errors]
        error_columns = [*all_keys.columns, "error"]
    probabilities = predict_in_chunks(model, rows, args.chunk_size)
    write_table(predictions_frame(model, keys, probabilities), args.output)
    pd.DataFrame(errors, columns=error_columns).to_csv(errors_path, index=False)
    print(f"{len(keys)} predictions -> {args.output}; {len(errors)} rejected -> {errors_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

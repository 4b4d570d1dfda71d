"""The one definition of each served model, imported by training and by the service.

Everything both sides must agree on lives here: class names, the input schema (features
with types and valid ranges, or image geometry), the quality gate and the batching
limits. SPECS, at the end, is the registry: the service's routes, loading, schemas,
/models, V2, drift and metrics, `bentoml build`'s models, the batch CLI and the load tests
all follow from it. A fifth model is one spec here plus one trainer in training/trainers.py
(docs/adding-a-model.md). A spec the service could not serve is refused when it is made.

The module has no heavy imports so that it loads fast inside the service and ships
inside the bento.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

Task = Literal["tabular", "image"]

# File names inside a BentoML model folder: the trained source of truth (the Keras model;
# scikit-learn's pickle, where bentoml.sklearn.load_model finds it) and what the service
# runs: the LiteRT (TFLite) conversion without TensorFlow, the arrays without scikit-learn.
KERAS_MODEL_FILE = "model.keras"
LITERT_MODEL_FILE = "model.tflite"
SKLEARN_MODEL_FILE = "saved_model.pkl"
ARRAYS_MODEL_FILE = "model.npz"
SERVING_ARTIFACTS_VERSION = 3
"""Raise it when every stored model needs something new saved with it (2: the drift
profile; 3: the scikit-learn models' arrays): it enters each fingerprint, so older models
are refused and `--only-missing` retrains them."""


@dataclass(frozen=True)
class NumericFeature:
    """A number with an inclusive valid range; `integer` rejects fractional values."""

    name: str
    minimum: float
    maximum: float
    integer: bool = False
    description: str = ""


@dataclass(frozen=True)
class CategoricalFeature:
    """A string taking one of a fixed set of values (the values seen in the source data)."""

    name: str
    categories: tuple[str, ...]
    description: str = ""


Feature = NumericFeature | CategoricalFeature


@dataclass(frozen=True)
class ImageInput:
    """How an uploaded image becomes the model's input array.

    `scale` maps 8-bit intensities (0..255) to the model's range; `invert_light_background`
    turns dark-ink-on-white uploads into the light-on-dark convention of the training data.
    """

    height: int
    width: int
    color_mode: Literal["L", "RGB"]
    scale: float
    invert_light_background: bool = False
    transparent_becomes: Literal["black", "white", "contrast"] = "contrast"
    """What a transparent area turns into: the training images' background, or ("contrast")
    the page colour that contrasts with the strokes (white under dark ink, black under light)."""

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "L" else 3


GATE_METRICS = ("accuracy", "f1_macro", "log_loss", "roc_auc")
"""What training measures on every model's test split (training/evaluation.py)."""
LOWER_IS_BETTER = ("log_loss",)
"""Metrics where a smaller value is better; the others (accuracy, f1, roc_auc) grow."""


@dataclass(frozen=True)
class Gate:
    """Test-set thresholds a model must meet before it becomes the served version, and how
    it must compare with the model served now (the relative gate, training/pipeline.py)."""

    minimum: dict[str, float] = field(default_factory=dict)
    maximum: dict[str, float] = field(default_factory=dict)
    primary: str = "accuracy"
    """The metric a candidate and the served model are compared on, on the same test rows."""
    tolerance: float = 0.0
    """How much worse than the served model on `primary` a candidate may be (test-set noise)."""

    def lost_by(self, candidate: dict[str, float], champion: dict[str, float]) -> float:
        """How much worse the candidate is on `primary` (<= 0: as good or better)."""
        difference = candidate[self.primary] - champion[self.primary]
        return difference if self.primary in LOWER_IS_BETTER else -difference

    def beats(self, candidate: dict[str, float], champion: dict[str, float]) -> bool:
        """Not worse than the champion on `primary` beyond the tolerance."""
        return self.lost_by(candidate, champion) <= self.tolerance

    def failures(self, metrics: dict[str, float]) -> list[str]:
        """Human-readable reasons the metrics miss the gate; empty when it passes."""
        reasons = []
        for name, bound in self.minimum.items():
            value = metrics.get(name)
            if value is None or not value >= bound:
                reasons.append(f"{name}={value} is below the minimum {bound}")
        for name, bound in self.maximum.items():
            value = metrics.get(name)
            if value is None or not value <= bound:
                reasons.append(f"{name}={value} is above the maximum {bound}")
        return reasons


@dataclass(frozen=True)
class Batching:
    """Adaptive batching limits for the model's endpoint (chosen from measurements)."""

    max_batch_size: int
    max_latency_ms: int
    batches_in_flight: int = 1
    """2: the next batch is formed while one computes and starts the moment it ends. Pays
    for the CNN (its compute releases the GIL); the tabular models do Python work per batch
    and gain more from the bigger batches that form while they wait (docs/benchmarks.md)."""
    on_event_loop: bool = False
    """An idle model runs a request inline on the event loop, without the hand-off to its
    thread and back: for calls cheaper than that hand-off (service/batching.py)."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: Task
    description: str
    class_names: tuple[str, ...]
    gate: Gate
    quick_gate: Gate
    batching: Batching
    features: tuple[Feature, ...] = ()
    image: ImageInput | None = None
    max_records_per_call: int = 1000
    extra_fields: Literal["forbid", "ignore"] = "forbid"
    """What a record's unknown fields get: "forbid" refuses them (a typo must not pass
    silently); "ignore" drops them (kobe takes raw Kaggle rows with their ids)."""
    id_column: str | None = None
    """A column of batch-scoring files that names each row (kobe: `shot_id`), carried to
    the predictions and errors files; not a feature. Images are named by their path."""
    preprocessing_version: int = 1
    """Raise it when the saved model's input step changes: stored models then fail the
    fingerprint check (the service refuses them, `--only-missing` retrains them)."""

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(f"model spec {self.name!r} cannot be served: {'; '.join(problems)}")

    def problems(self) -> list[str]:
        """Why the service could not serve this spec (its routes, schemas and tensors
        follow from it); empty when it can."""
        problems = []
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", self.name):
            problems.append("the name must be 1-40 lowercase letters, digits or '_', starting with a letter "
                            "(it names routes, environment variables and metrics)")
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            problems.append("class_names must hold two or more distinct names")
        names = self.feature_names
        if len(set(names)) != len(names):
            problems.append("feature names must be distinct")
        if self.id_column is not None and (self.task != "tabular" or self.id_column in names):
            problems.append("id_column names a column of a tabular model's files that is not a feature")
        if {"input", "image", "pixels"} & set(names):
            problems.append("'input', 'image' and 'pixels' name V2 tensors: not feature names")
        if self.task == "tabular" and (not self.features or self.image is not None):
            problems.append("a tabular model needs features and no image")
        if self.task == "image" and self.image is None:
            problems.append("an image model needs its image geometry (ImageInput)")
        if self.task == "image" and self.categorical_features:
            problems.append("an image model's features, when given, are its pixels: numbers only")
        if self.task == "image" and self.features and self.image is not None and len(self.features) != (
                self.image.height * self.image.width * self.image.channels):
            problems.append("an image model's features, when given, are its pixels: height x width x channels")
        for feature in self.features:
            if isinstance(feature, NumericFeature) and not feature.minimum <= feature.maximum:
                problems.append(f"{feature.name}: minimum above maximum")
            if isinstance(feature, CategoricalFeature) and not feature.categories:
                problems.append(f"{feature.name}: no categories")
        for gate in (self.gate, self.quick_gate):
            if gate.primary not in GATE_METRICS or gate.tolerance < 0:
                problems.append(f"a gate compares on one of {GATE_METRICS} with a tolerance >= 0")
        if self.max_records_per_call < 1 or self.batching.max_batch_size < 1 or self.batching.max_latency_ms < 1:
            problems.append("max_records_per_call, max_batch_size and max_latency_ms must be positive")
        if self.batching.batches_in_flight not in (1, 2):
            problems.append("batches_in_flight must be 1 or 2")
        return problems

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric_features(self) -> list[NumericFeature]:
        return [f for f in self.features if isinstance(f, NumericFeature)]

    @property
    def categorical_features(self) -> list[CategoricalFeature]:
        return [f for f in self.features if isinstance(f, CategoricalFeature)]

    def schema(self) -> dict:
        """The input/output contract as plain JSON data (stored with the model)."""
        schema: dict = {  # JSON types only: tuples become lists
            "name": self.name,
            "task": self.task,
            "class_names": list(self.class_names),
            "preprocessing_version": self.preprocessing_version,
            "serving_artifacts_version": SERVING_ARTIFACTS_VERSION,
            "features": [{"kind": type(f).__name__, **_listed(asdict(f))} for f in self.features],
        }
        if self.image is not None:  # BentoML metadata cannot hold None
            schema["image"] = asdict(self.image)
        return schema

    @property
    def numeric_only(self) -> bool:
        """Every feature is a number: the model takes a float64 array, not a DataFrame."""
        return all(isinstance(f, NumericFeature) for f in self.features)

    def fingerprint(self) -> str:
        """A hash of the schema: the service refuses a model trained under another one."""
        encoded = json.dumps(self.schema(), sort_keys=True).encode()
        return hashlib.sha256(encoded).hexdigest()[:16]


def _listed(fields: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}


# --- the models ------------------------------------------------------------------------

DIGITS = ModelSpec(
    name="digits",
    task="image",
    description="Handwritten digit 0-9 from an 8x8 image (scikit-learn's digits).",
    class_names=tuple(str(d) for d in range(10)),
    # 64 pixels in scikit-learn's convention: 0 = background, 16 = full ink. Batch files
    # name them as columns, beside any others (ids), which are ignored.
    features=tuple(
        NumericFeature(f"pixel_{i}", 0.0, 16.0, description=f"row {i // 8}, column {i % 8}")
        for i in range(64)
    ),
    image=ImageInput(height=8, width=8, color_mode="L", scale=16.0 / 255.0,
                     invert_light_background=True),
    extra_fields="ignore",
    gate=Gate(minimum={"accuracy": 0.97}, primary="accuracy", tolerance=0.004),  # 1 of 270 test rows
    quick_gate=Gate(minimum={"accuracy": 0.8}),
    batching=Batching(max_batch_size=64, max_latency_ms=1000, on_event_loop=True),
)

IRIS = ModelSpec(
    name="iris",
    task="tabular",
    description="Iris species from sepal and petal measurements in centimetres.",
    class_names=("setosa", "versicolor", "virginica"),
    features=(
        NumericFeature("sepal_length", 0.0, 30.0, description="cm"),
        NumericFeature("sepal_width", 0.0, 30.0, description="cm"),
        NumericFeature("petal_length", 0.0, 30.0, description="cm"),
        NumericFeature("petal_width", 0.0, 30.0, description="cm"),
    ),
    # 23 test rows: accuracy moves in steps of 0.043, the log loss is the finer judge.
    gate=Gate(minimum={"accuracy": 0.95}, primary="log_loss", tolerance=0.02),
    quick_gate=Gate(minimum={"accuracy": 0.8}),
    preprocessing_version=2,  # 2: trained on a float64 array (numeric_only), not a DataFrame
    batching=Batching(max_batch_size=64, max_latency_ms=1000, on_event_loop=True),
)

KOBE_SEASONS = tuple(f"{y}-{(y + 1) % 100:02d}" for y in range(1996, 2016))
KOBE_OPPONENTS = (
    "ATL", "BKN", "BOS", "CHA", "CHI", "CLE", "DAL", "DEN", "DET", "GSW", "HOU",
    "IND", "LAC", "MEM", "MIA", "MIL", "MIN", "NJN", "NOH", "NOP", "NYK", "OKC",
    "ORL", "PHI", "PHX", "POR", "SAC", "SAS", "SEA", "TOR", "UTA", "VAN", "WAS",
)
# matchup spells some teams with older codes than opponent does (PHO/PHX, UTH/UTA, ...).
KOBE_MATCHUP_TEAMS = tuple(sorted({*KOBE_OPPONENTS, "CHH", "NOK", "PHO", "SAN", "UTH"}))
KOBE_MATCHUPS = tuple(f"LAL {where} {team}" for team in KOBE_MATCHUP_TEAMS for where in ("vs.", "@"))

KOBE = ModelSpec(
    name="kobe",
    task="tabular",
    description=(
        "Probability that a Kobe Bryant field-goal attempt goes in, from facts known at "
        "the moment of the shot (Kaggle 'Kobe Bryant Shot Selection' columns)."
    ),
    class_names=("missed", "made"),
    id_column="shot_id",
    preprocessing_version=2,  # 2: kobe_model_matrix replaced a ColumnTransformer
    features=(
        CategoricalFeature("action_type", (
            "Alley Oop Dunk Shot", "Alley Oop Layup shot", "Cutting Finger Roll Layup Shot",
            "Cutting Layup Shot", "Driving Bank shot", "Driving Dunk Shot",
            "Driving Finger Roll Layup Shot", "Driving Finger Roll Shot",
            "Driving Floating Bank Jump Shot", "Driving Floating Jump Shot",
            "Driving Hook Shot", "Driving Jump shot", "Driving Layup Shot",
            "Driving Reverse Layup Shot", "Driving Slam Dunk Shot", "Dunk Shot",
            "Fadeaway Bank shot", "Fadeaway Jump Shot", "Finger Roll Layup Shot",
            "Finger Roll Shot", "Floating Jump shot", "Follow Up Dunk Shot",
            "Hook Bank Shot", "Hook Shot", "Jump Bank Shot", "Jump Hook Shot", "Jump Shot",
            "Layup Shot", "Pullup Bank shot", "Pullup Jump shot", "Putback Dunk Shot",
            "Putback Layup Shot", "Putback Slam Dunk Shot", "Reverse Dunk Shot",
            "Reverse Layup Shot", "Reverse Slam Dunk Shot", "Running Bank shot",
            "Running Dunk Shot", "Running Finger Roll Layup Shot", "Running Finger Roll Shot",
            "Running Hook Shot", "Running Jump Shot", "Running Layup Shot",
            "Running Pull-Up Jump Shot", "Running Reverse Layup Shot",
            "Running Slam Dunk Shot", "Running Tip Shot", "Slam Dunk Shot",
            "Step Back Jump shot", "Tip Layup Shot", "Tip Shot", "Turnaround Bank shot",
            "Turnaround Fadeaway Bank Jump Shot", "Turnaround Fadeaway shot",
            "Turnaround Finger Roll Shot", "Turnaround Hook Shot", "Turnaround Jump Shot",
        )),
        CategoricalFeature("combined_shot_type", (
            "Bank Shot", "Dunk", "Hook Shot", "Jump Shot", "Layup", "Tip Shot",
        )),
        CategoricalFeature("shot_zone_area", (
            "Back Court(BC)", "Center(C)", "Left Side Center(LC)", "Left Side(L)",
            "Right Side Center(RC)", "Right Side(R)",
        )),
        CategoricalFeature("shot_zone_basic", (
            "Above the Break 3", "Backcourt", "In The Paint (Non-RA)", "Left Corner 3",
            "Mid-Range", "Restricted Area", "Right Corner 3",
        )),
        CategoricalFeature("shot_zone_range", (
            "16-24 ft.", "24+ ft.", "8-16 ft.", "Back Court Shot", "Less Than 8 ft.",
        )),
        CategoricalFeature("matchup", KOBE_MATCHUPS, description="'LAL vs. OPP' at home, 'LAL @ OPP' away"),
        CategoricalFeature("season", KOBE_SEASONS, description="NBA season, e.g. 2000-01"),
        CategoricalFeature("opponent", KOBE_OPPONENTS),
        NumericFeature("loc_x", -250, 250, integer=True, description="court x, 1/10 ft"),
        NumericFeature("loc_y", -60, 900, integer=True, description="court y, 1/10 ft"),
        NumericFeature("shot_distance", 0, 94, integer=True, description="feet"),
        NumericFeature("period", 1, 10, integer=True, description="quarter; 5+ is overtime"),
        NumericFeature("minutes_remaining", 0, 12, integer=True, description="in the period"),
        NumericFeature("seconds_remaining", 0, 59, integer=True, description="in the minute"),
        NumericFeature("playoffs", 0, 1, integer=True, description="1 in the playoffs"),
    ),
    extra_fields="ignore",  # a raw Kaggle row, with its ids and other columns, is accepted as it is
    # The seed logistic regression reached log loss 0.675; the bar is a clear win.
    gate=Gate(minimum={"roc_auc": 0.71}, maximum={"log_loss": 0.61}, primary="log_loss", tolerance=0.002),
    quick_gate=Gate(minimum={"roc_auc": 0.6}),
    batching=Batching(max_batch_size=64, max_latency_ms=1000, on_event_loop=True),
)

MALARIA = ModelSpec(
    name="malaria",
    task="image",
    description="Thin blood smear cell image: parasitized by malaria or uninfected.",
    class_names=("Parasitized", "Uninfected"),
    image=ImageInput(height=50, width=50, color_mode="L", scale=1.0 / 255.0,
                     transparent_becomes="black"),  # the cells lie on black
    preprocessing_version=2,  # 2: served from a LiteRT file saved beside the Keras model
    gate=Gate(minimum={"accuracy": 0.95}, primary="accuracy", tolerance=0.003),  # 11 of 3,834 test rows
    quick_gate=Gate(minimum={"accuracy": 0.75}),
    batching=Batching(max_batch_size=32, max_latency_ms=2000, batches_in_flight=2),
    max_records_per_call=64,
)


def registry(*specs: ModelSpec) -> dict[str, ModelSpec]:
    """Specs by name, in the order given (routes, /models and V2 list them so)."""
    named = {spec.name: spec for spec in specs}
    if len(named) != len(specs):
        raise ValueError(f"two model specs share a name: {[spec.name for spec in specs]}")
    return named


SPECS: dict[str, ModelSpec] = registry(DIGITS, IRIS, KOBE, MALARIA)
"""Every served model. Add a spec here (and its trainer in training/trainers.py)."""


def get_spec(name: str) -> ModelSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(SPECS)}") from None

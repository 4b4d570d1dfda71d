"""Full training on the real data meets every quality gate (slow: about 16 minutes, nearly all the CNN)."""

import pytest
from mlflow import MlflowClient

from service.specs import SPECS
from training.pipeline import train_model

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", list(SPECS))
def test_full_training_passes_the_gate(settings, name):
    result = train_model(name, settings)
    assert result.passed, result.gate_failures
    assert result.metrics["accuracy"] > result.metrics["baseline_accuracy"]
    assert result.metrics["log_loss"] < result.metrics["baseline_log_loss"]
    if name == "digits":
        assert result.metrics["accuracy"] >= 0.98
    assert not result.tag.split(":")[1].startswith("quick-")
    versions = MlflowClient().search_model_versions(f"name='{name}'")
    assert result.mlflow_run_id in {v.run_id for v in versions}, "a full model that passed is registered"

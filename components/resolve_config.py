"""Step 0: apply the Kubeflow UI parameters to the compiled-in config and open the MLflow run."""

from typing import Any

from kfp.dsl import Artifact, Output, OutputPath

from pairflow.components.base import component


@component
def resolve_config(
    defaults_json: str,
    params: dict[str, Any],
    kfp_run_id: str,
    kfp_run_name: str,
    config: Output[Artifact],
    mlflow_run_id: OutputPath(str),  # type: ignore[valid-type]
) -> str:
    """Validate the run's config (compiled defaults + UI parameters); return its hash.

    ``mlflow_run_id``: the MLflow run that records this pipeline run, which every later step
    logs to.
    """
    from pathlib import Path

    from pairflow.stage_io import compiled_config
    from pairflow.stages.resolve_config.step import ResolveInputs, ResolveOutputs, run

    inputs = ResolveInputs(params, kfp_run_id, kfp_run_name)
    resolved = run(compiled_config(defaults_json), inputs, ResolveOutputs(Path(config.path)))
    config.metadata["config_hash"] = resolved.config_hash
    Path(mlflow_run_id).parent.mkdir(parents=True, exist_ok=True)
    Path(mlflow_run_id).write_text(resolved.mlflow_run_id)
    return resolved.config_hash

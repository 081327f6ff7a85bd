"""Step 0: apply the Kubeflow UI parameters to the compiled-in config and open the MLflow run."""

from typing import Any

from kfp.dsl import Artifact, Output

from pairflow.components.base import component


@component
def resolve_config(
    defaults_json: str,
    params: dict[str, Any],
    kfp_run_id: str,
    kfp_run_name: str,
    config: Output[Artifact],
) -> str:
    """Validate the run's config (compiled defaults + UI parameters); return its hash."""
    from pairflow.stages.resolve_config.step import resolve_config_step

    digest = resolve_config_step(defaults_json, params, kfp_run_id, kfp_run_name, config.path)
    config.metadata["config_hash"] = digest
    return digest

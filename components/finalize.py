"""Exit handler: record the pipeline's final status in the log and in MLflow."""

from kfp import dsl

from pairflow.components.base import component


@component
def finalize(
    status: dsl.PipelineTaskFinalStatus,
    tracking_uri: str,
    experiment: str,
    workdir: str,
    kfp_run_id: str,
) -> str:
    """Runs whether the pipeline succeeded or failed."""
    from pairflow.stages.finalize.step import FinalizeInputs, run

    return run(
        FinalizeInputs(
            tracking_uri,
            experiment,
            workdir,
            kfp_run_id,
            {
                "state": status.state,
                "error": {"code": status.error_code, "message": status.error_message},
                "task": status.pipeline_task_name,
            },
        )
    )

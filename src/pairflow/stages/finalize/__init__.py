"""Exit handler: record the pipeline's final state in the log and MLflow."""

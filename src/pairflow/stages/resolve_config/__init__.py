"""Step 0: apply the run's parameters to the compiled-in config and open its MLflow run."""

"""register: log the shipped variant as an MLflow model version with lineage, card and
aliases."""

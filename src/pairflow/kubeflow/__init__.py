"""Kubeflow Pipelines: submitting, scheduling and promoting the compiled pipeline on a KFP
endpoint, and the cluster names shared with the manifests."""

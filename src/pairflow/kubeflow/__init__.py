"""Kubeflow: submitting, scheduling and promoting the compiled pipeline on a KFP endpoint.

Keep this file free of heavy imports: ``pairflow.config`` imports ``kubeflow.settings``.
"""

"""Names the code and ``manifests/`` share: one place, checked against the rendered manifests
(tests/unit/test_manifests.py and tests/unit/test_deploy_kserve.py assert they match)."""

from __future__ import annotations

NAMESPACE = "pairflow"
"""Namespace of every namespaced object in manifests/ (kustomization ``namespace``)."""

TRAINING_RUNTIME = "pairflow-torch"
"""ClusterTrainingRuntime the train step's TrainJob references (training-runtime.yaml)."""

TRAINER_CONTAINER = "node"
"""The runtime's trainer container: Trainer's torch plugin injects ``PET_*`` into the container
named ``node`` of the replicated job whose ancestor label is ``trainer``."""

INFERENCE_SERVICE = "pairflow-predictor"
"""InferenceService the kserve canary patches (inferenceservice.yaml)."""

PREDICTOR_CONTAINER = "kserve-container"
"""The predictor's container in that InferenceService (KServe's custom-predictor name)."""

MODEL_URI_ENV = "MODEL_URI"
"""Env var of the predictor container holding the served model (its args use ``$(MODEL_URI)``)."""

SCRAPE_INTERVAL_S = 15.0
"""PodMonitor scrape interval of the predictor (monitoring.yaml ``interval: 15s``)."""

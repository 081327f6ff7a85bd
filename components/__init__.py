"""KFP components: one thin ``@dsl.component`` per pipeline step over ``pairflow.steps``.

Importable as ``pairflow.components``. The base image comes from the config
(``kubeflow.base_image``), or ``$PAIRFLOW_BASE_IMAGE`` when set before import.
"""

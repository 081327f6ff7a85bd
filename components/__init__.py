"""KFP components: one thin ``@dsl.component`` per pipeline step over ``pairflow.stage_io``.

Importable as ``pairflow.components``. They are decorated with the runtime image; the pipeline
sets every task's image from ``kubeflow.base_image`` (see ``pipelines/retrain.py``).
"""

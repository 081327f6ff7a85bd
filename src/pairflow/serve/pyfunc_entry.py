"""Models-from-code entry file: MLflow copies it into the model and runs it on load."""

import mlflow.models

from pairflow.serve.pyfunc import PairClipModel

mlflow.models.set_model(PairClipModel())

"""pairflow: continuous retraining of image-text models on Kubeflow."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pairflow")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

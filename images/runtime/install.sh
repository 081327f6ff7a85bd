#!/bin/sh
# Build the runtime environment: a fresh venv at $1 holding torch and pairflow (with kfp),
# installed from the build context $2 (not editable). images/runtime/Dockerfile runs exactly
# this, and tests/e2e/test_runtime_image.py runs it too, so the committed pipeline is checked
# in an environment built the way the image is.
#   TORCH_INDEX  pip index for torch/torchvision; default the PyTorch CPU index, empty = PyPI
set -eu
venv="$1"
context="$2"
torch_index="${TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
python3 -m venv "$venv"
pip="$venv/bin/python -m pip"
$pip install --quiet --upgrade pip
if [ -n "$torch_index" ]; then
  $pip install --quiet --index-url "$torch_index" torch==2.14.1 torchvision==0.29.1
else
  $pip install --quiet torch==2.14.1 torchvision==0.29.1
fi
$pip install --quiet "$context"
# Every executor runs `python3 -m kfp.dsl.executor_main` and imports pairflow: fail the build
# here, not on the cluster.
"$venv/bin/python3" -c "import kfp.dsl.executor_main, pairflow.cli, pairflow.stage_io"

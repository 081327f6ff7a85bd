"""Run a compiled KFP package (IR YAML) with ``kfp.local``, in whatever Python runs this file.

``python package_runner.py PACKAGE WORKDIR ARGS_JSON`` loads ``PACKAGE`` with
``kfp.components.load_component_from_file`` (the YAML itself, not the Python pipeline
function) and runs it through ``kfp.local.SubprocessRunner(use_venv=False)``: each executor's
``command`` + ``args`` from the YAML run as a subprocess of this interpreter (kfp.local swaps
``python3`` in the command for ``sys.executable``), the way the KFP launcher runs them in the
image. Run by a fresh runtime venv's Python (``images/runtime/install.sh``), every step imports
kfp and pairflow from that venv only. The Kubernetes ``platform_spec`` is not applied by
kfp.local: the caller passes the env it would inject. Prints one JSON line: the outputs or the
error. Stdlib and kfp only, since the runtime venv has no test dependencies.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path


def main(package: str, workdir: str, args_json: str) -> int:
    from kfp import components, local

    root = Path(workdir)
    (root / "runs").mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root / "runs"),
        workspace_root=str(root / "workspace"),
        raise_on_error=True,
    )
    pipeline = components.load_component_from_file(package)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pipeline(**json.loads(args_json))
        except RuntimeError as exc:
            print(json.dumps({"succeeded": False, "error": str(exc).splitlines()[0]}))
            return 1
    print(json.dumps({"succeeded": True, "error": ""}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))

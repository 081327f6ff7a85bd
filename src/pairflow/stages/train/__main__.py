"""``python -m pairflow.stages.train ...``: the torchrun entry point (see
``pairflow.stages.train.worker``)."""

from pairflow.stages.train.worker import main

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m pairflow.train ...``: the torchrun entry point (see ``pairflow.train.worker``)."""

from pairflow.train.worker import main

if __name__ == "__main__":
    raise SystemExit(main())

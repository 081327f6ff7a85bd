"""The pipeline's steps, one package each, named as in the DAG.

Each holds ``settings.py`` (its config section), its logic, ``step.py`` (what the KFP component
calls) and ``cli.py`` (the same step, standalone). A stage imports ``models``, ``data``,
``config`` and the shared helpers, never another stage (the import contract in
``pyproject.toml``, checked by ``make test``).

Keep stage ``__init__`` files free of imports: ``pairflow.config`` imports every
``settings.py``.
"""

"""KFP pipelines, importable as ``pairflow.pipelines``."""

"""Request logging: the predictor's sampled payload marks, the CloudEvents emitter, the
sink that writes them as hour-partitioned Parquet, and windows read back."""

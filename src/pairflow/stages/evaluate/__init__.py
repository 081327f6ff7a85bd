"""evaluate: retrieval and classifier metrics, champion comparison with paired-bootstrap
intervals, the rollout gate, the drift report and the serving reference."""

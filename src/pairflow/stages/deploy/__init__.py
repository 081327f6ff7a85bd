"""deploy: canary rollout of the registered version (local processes or KServe) with a
statistical analysis per step; promotes or rolls back."""

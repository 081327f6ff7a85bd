"""monitor: judge a window of logged traffic for drift against the champion's serving
reference, record the verdict, and trigger a guarded retrain."""

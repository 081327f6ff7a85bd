"""Watch served traffic: request logging (sink), drift against the champion's reference,
and a guarded retrain trigger."""

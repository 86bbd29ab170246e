"""A run's life on one target: the lock, the run directory, the helper's session, saving,
and what a killed run left behind (recovery)."""

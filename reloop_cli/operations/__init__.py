"""Running reloop in production: the nightly cycle, the gate, promotion and rollback, the
report, export and experiment tracking."""

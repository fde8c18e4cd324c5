"""On-demand benchmarks (never run by the test suite except as a tiny smoke run)."""

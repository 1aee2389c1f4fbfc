"""Benchmarks (measurements, not tests); see README.md. ``python -m benchmarks.peers`` runs the
side-by-side comparison with dbt, a hand-kept psql script and pg_cron."""

"""Schedules: timing (pure), store (the schedule table and scheduler.pg_task), statements."""

"""Plain value types shared by every layer: statuses that mirror the database, typed events."""

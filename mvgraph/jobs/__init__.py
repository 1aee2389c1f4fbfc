"""Jobs: persistence (store), the queue worker, and the SQL API they share."""

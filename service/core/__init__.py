"""The shared core of both processes: settings, logs, Postgres, the queue, group commits."""

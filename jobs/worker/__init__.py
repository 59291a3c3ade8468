"""The worker process: takes jobs from Redis, claims them in Postgres, runs and records them."""

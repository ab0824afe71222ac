"""Publishing quotas: reading them per scrape (cache, single flight, backoff) and their metrics."""

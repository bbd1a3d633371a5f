"""``monitoring.integration.elasticsearch``: metrics, alerts and logs into Elasticsearch as ECS; searches as metrics."""

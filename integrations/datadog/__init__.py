"""``monitoring.integration.datadog``: DogStatsD and Datadog intake in, the Datadog API out."""

"""The Prometheus bridge (``monitoring.integration.prometheus``): scrape import, remote write
with a persistent queue, federation, Pushgateway export, and alerts to/from Alertmanager and
Prometheus."""

"""Nagios, both ways: plugins run as checks (``monitoring.metrics.nagios``), monbridge as a
Nagios plugin (``monbridge check``), and the plugin API's pieces they share: plugin output,
perfdata and threshold ranges."""

"""The dashboard: recent history of every series, the component runtime and its API, the web UI."""

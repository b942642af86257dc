"""The core's use cases over the ports: access (the request lifecycle), catalog, schedule, retention, importers."""

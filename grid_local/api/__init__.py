"""The grid's HTTP APIs: the Client API (public, OpenAPI) and the Worker API (workers and connectors)."""

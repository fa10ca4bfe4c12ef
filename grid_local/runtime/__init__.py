"""The durable Starlark runtime: dialect and loader, prelude, journal and replay (no I/O of its own)."""

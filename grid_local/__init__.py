"""The Flowmetal runtime and its local grid: dialect, prelude, journal and replay, Flow DB, APIs, worker, connectors."""

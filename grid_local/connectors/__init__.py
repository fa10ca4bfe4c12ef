"""Connector processes: they claim action requests through the Worker API, perform them, record results."""

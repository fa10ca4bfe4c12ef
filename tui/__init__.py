"""The Textual debugger behind ``flowmetal tui``: ``FlowmetalApp`` over a grid's Client API."""

from tui.app import FlowmetalApp

__all__ = ["FlowmetalApp"]

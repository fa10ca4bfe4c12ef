"""Modal screens of the debugger; each returns a typed result through ``dismiss()``."""

"""Stand-in for the WebUI's `modules` package (see tests/webui_standins/__init__.py)."""

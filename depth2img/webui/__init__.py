"""Stage 9, host: the AUTOMATIC1111 WebUI's job logic, hooks and routes (without the WebUI itself)."""

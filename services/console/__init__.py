"""The web console: server-rendered pages over the four services' public API (CONTRACT §11)."""

"""The remote backend: ``RemoteEngine`` implements the Engine contract against an
OpenAI-compatible server (engine.py), reading its server-sent events (events.py)."""

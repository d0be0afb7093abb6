"""Prompt building, independent of any model runtime: chat formats and the ``Message`` they render
(formats.py), fitting a conversation into the context (fit.py), plain-text stops (stops.py) and
fill-in-the-middle prompts (fim.py). Imports nothing else from the engine."""

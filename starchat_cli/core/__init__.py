"""The engine: no textual, typer or rich imports here (tests/test_import_hygiene.py checks).

Heavy modules (llama_cpp, jinja2) are imported inside the functions that need them.
"""

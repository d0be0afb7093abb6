"""The base layer: errors and exit codes, paths, atomic files, units and defaults.

It imports nothing else from starchat_cli, and no UI library (the import contracts in
pyproject.toml and tests/test_import_hygiene.py check both).
"""

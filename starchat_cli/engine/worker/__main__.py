"""``python -m starchat_cli.engine.worker SPEC-JSON``: the worker process (server.py)."""

from starchat_cli.engine.worker.server import main

main()

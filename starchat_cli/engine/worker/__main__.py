"""``python -m starchat_cli.engine.worker KEY KEEP_ALIVE SPEC-JSON PID``: the worker process (server.py)."""

from starchat_cli.engine.worker.server import main

if __name__ == "__main__":
    main()

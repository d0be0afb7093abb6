"""``python -m starchat_cli.engine.worker``: the worker process (server.py); what it runs comes on stdin."""

from starchat_cli.engine.worker.server import main

if __name__ == "__main__":
    main()

"""A process that owns llama.cpp for one model: kept warm across calls, isolated from its faults.

    engine = WorkerEngine(spec, keep_alive=300)   # client.py: an Engine, as LocalEngine is
    engine.load()                                 # connects to the model's worker, or starts one

spec.py (what a worker runs: the model and its load-time settings), protocol.py (frames on a Unix
socket), registry.py (the runtime folder: sockets, state files, the start lock), ahead.py (starting
a worker, ahead of need too), client.py (the Engine the faces use), server.py (the worker:
``python -m starchat_cli.engine.worker``), local.py (the LocalEngine a spec builds: the worker's,
and the in-process path's).
"""

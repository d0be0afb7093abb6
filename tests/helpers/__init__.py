"""What the tests share besides fixtures (those live in tests/conftest.py):

- ``cli``: the repository root and the real CLI as a subprocess (``run_starchat``, ``start_starchat``);
- ``servers``: free ports, ``starchat serve`` subprocesses, loopback HTTP servers, the server app in uvicorn;
- ``models``: tiny GGUF files and tiny random checkpoints, built once per session;
- ``tui``: driving the chat app through Textual's pilot;
- ``fake_engine``, ``fake_hub``: a fake Engine and a fake Hugging Face Hub;
- ``slow_convert``: ``starchat`` with a conversion slowed down, for tests that signal it mid-write.

    from tests.helpers.cli import REPO, run_starchat
"""

"""Running a model: the Engine contract (contract.py) and its backends, one sub-package each.

``llamacpp/`` runs GGUF models through llama-cpp-python, ``remote/`` talks to any
OpenAI-compatible server; ``speculative/`` is drafted decoding against a small decoder
protocol, ``prompting/`` the model-independent prompt building (formats, fit, stops, FIM).
The layers between them are contracts in pyproject.toml. No UI imports; llama_cpp is
imported on first use, and only under ``llamacpp/``.
"""

"""Running a model: the Engine contract (contract.py) and its backends.

``local.py`` drives llama.cpp through llama-cpp-python (``llama.py``), ``remote.py`` any
OpenAI-compatible server. Prompt formats, stops, context fitting, GPU offload planning
and hardware probing live here too. No UI imports; llama_cpp is imported on first use.
"""

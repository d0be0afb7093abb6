"""``starchat serve``'s OpenAI-compatible HTTP API, one module per concern.

``app`` builds the Starlette app (``make_app``); ``routes`` holds the endpoints;
``requests`` reads and checks request bodies; ``bridge`` runs generations in worker
threads for the event loop; ``sse`` shapes replies (JSON or server-sent events);
``auth`` checks the API key; ``guard`` is the Host/Origin/CORS/content-type middleware;
``errors`` gives every failure OpenAI's error shape; ``config`` is the typed ``ServerConfig``.
``ollama`` holds Ollama's API (its requests in ``ollama_requests``, what it says about the
model in ``ollama_model``). ``extras`` holds llama.cpp's ``/tokenize``, ``/detokenize`` and
``/props``, ``GET /v1/models/{id}`` and the refusals; ``names`` decides which model a request's
``model`` means (the served one, unless ``--strict-model``).
"""

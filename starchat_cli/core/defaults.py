"""Defaults, written once: the engine, the config, the CLI's help texts and the server read them here."""

from __future__ import annotations

TEMPERATURE = 0.2  # sampling temperature (0 is greedy)
TOP_P = 0.95  # nucleus sampling cut-off
CTX = 4096  # context window in tokens, capped at the model's trained length
GPU = "auto"  # GPU offload: "auto" (planned from free memory), "off", or a number of layers
N_BATCH = 512  # llama.cpp's prompt batch
SERVE_HOST = "127.0.0.1"
SERVE_PORT = 8080
SERVE_MAX_TOKENS = 4096  # the largest max_tokens a request to `starchat serve` may ask for
SERVE_MAX_BODY = 1 << 20  # the largest request body `starchat serve` reads, in bytes
PROMPT_CACHE_GB = 4.0  # disk for saved prompt states (a 7k-token prompt: ~0.6 GB at 15B, ~0.16 GB demo)
DOCTOR_LOAD_CTX = 512  # `starchat doctor --load` loads each model with this small context
KEEP_ALIVE = 300.0  # seconds a model worker stays loaded after its last request (Ollama's 5 minutes)
DRAFT = "auto"  # drafted decoding: auto drafts only where the measured batch cost makes it pay

"""Model files: the catalog of known models, the local store, Hub downloads, GGUF metadata."""

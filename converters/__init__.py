"""Hugging Face checkpoints -> GGUF (StarCoder / StarCoder2) and quantization.

The converters land with the `starchat convert` / `quantize` issue; this package holds
no UI imports.
"""

"""Fault injection for tests: a Python process started with this folder on PYTHONPATH and
``STARCHAT_FAULT`` set crashes natively, the way llama.cpp does, at a chosen point.

    env = faults.env(at="prompt", how="segv", unless={"amx": "off"})   # tests/helpers/faults/__init__.py

``at``: ``load`` (creating the model), ``prompt`` (evaluating a prompt), ``decode`` (the
``after``-th generated token). ``how``: ``segv`` (SIGSEGV, as the AMX matmul fault), ``abort``
(SIGABRT after a GGML_ASSERT line, as a failed assertion), ``kill`` (SIGKILL, as from outside), ``oom`` (an allocation failure line, then
SIGABRT, as a GPU out of memory). ``unless``: load options under which nothing happens (the safer
settings the worker is expected to retry with). starchat itself holds no test code: this module
wraps LlamaCppBackend's methods as the module is imported, and only in processes that set the
variable.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import signal
import sys

_TARGET = "starchat_cli.engine.llamacpp.backend"


def _crash(how: str) -> None:
    sys.stderr.flush()
    if how == "oom":
        print(
            "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 2048.00 MiB on device 0: "
            "cudaMalloc failed: out of memory",
            file=sys.stderr,
            flush=True,
        )
        os.abort()
    if how == "abort":
        print("llama.cpp/ggml/src/ggml.c:1234: GGML_ASSERT(ne % 4 == 0) failed", file=sys.stderr, flush=True)
        os.abort()
    os.kill(os.getpid(), signal.SIGKILL if how == "kill" else signal.SIGSEGV)


def _armed(plan: dict, backend) -> bool:
    options = backend.options
    for key, value in (plan.get("unless") or {}).items():
        if str(getattr(options, key)).lower() == str(value).lower():
            return False
    return True


def _install(module) -> None:
    plan = json.loads(os.environ["STARCHAT_FAULT"])
    cls = module.LlamaCppBackend
    at, how = plan["at"], plan.get("how", "segv")
    if at == "load":
        original_load = cls.load

        def load(self):
            if not self.loaded and _armed(plan, self):
                _crash(how)
            return original_load(self)

        cls.load = load
    elif at == "prompt":
        original_eval = cls.eval_prompt

        def eval_prompt(self, tokens, abort=None):
            if _armed(plan, self):
                _crash(how)
            return original_eval(self, tokens, abort)

        cls.eval_prompt = eval_prompt
    elif at == "decode":
        after = int(plan.get("after", 3))
        original_decode = cls.decode_one
        counter = {"n": 0}

        def decode_one(self, token):
            counter["n"] += 1
            if counter["n"] >= after and _armed(plan, self):
                _crash(how)
            return original_decode(self, token)

        cls.decode_one = decode_one


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            _install(module)

        loader.exec_module = exec_and_wrap
        return spec


if os.environ.get("STARCHAT_FAULT"):
    sys.meta_path.insert(0, _Finder())

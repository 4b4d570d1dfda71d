"""Running a LiteRT (TFLite) model: what the service uses for the CNN instead of TensorFlow.

ai-edge-litert is a 60 MB runtime that imports in 0.05 s; TensorFlow is 1.3 GB and takes
seconds to import. The file is converted from the Keras model at training time and checked
against it there (training/litert.py), so the service never needs TensorFlow.
"""

from __future__ import annotations

import threading
from importlib.metadata import version
from typing import Any

import numpy as np


def runtime_version() -> str:
    return version("ai-edge-litert")


class LiteRTModel:
    """A LiteRT flatbuffer, callable on a batch of any size.

    A LiteRT interpreter must not be shared between threads, so each thread that calls
    the model (its batcher's thread, the warm-up, a pool thread when batching is off) gets
    an interpreter of its own, created on its first call.
    """

    def __init__(self, content: bytes, threads: int) -> None:
        self._content = content
        self._threads = threads
        self._local = threading.local()
        self._runner()  # a file LiteRT cannot read fails here, at load time

    def _runner(self) -> tuple[Any, str]:
        runner = getattr(self._local, "runner", None)
        if runner is None:
            from ai_edge_litert.interpreter import Interpreter

            interpreter = Interpreter(model_content=self._content, num_threads=self._threads)
            signature = interpreter.get_signature_list()
            if len(signature) != 1:
                raise ValueError(f"expected one signature in the LiteRT model, found {sorted(signature)}")
            (key, io), = signature.items()
            if len(io["inputs"]) != 1 or len(io["outputs"]) != 1:
                raise ValueError(f"expected one input and one output, found {io}")
            # The signature runner resizes the input to each batch's size by itself.
            runner = (interpreter.get_signature_runner(key), io["inputs"][0])
            self._local.runner = runner
        return runner

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        run, input_name = self._runner()
        outputs = run(**{input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.array(next(iter(outputs.values())))  # a copy: the interpreter reuses its buffers

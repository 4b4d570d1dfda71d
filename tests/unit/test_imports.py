"""What importing the service costs: `bentoml serve` imports it in the arbiter too, which
serves no request, so heavy libraries load only where a model needs them (the worker)."""

import os
import subprocess
import sys

from service.specs import SPECS

# Pinned versions: importing the service then reads no model store (it only names the
# versions; BentoML resolves them when serving), so these tests need no trained model.
PINNED = {**os.environ, **{f"{name.upper()}_MODEL_VERSION": "pinned" for name in SPECS}}


def test_importing_the_service_loads_no_model_library():
    program = ("import sys, service.service; "
               "print(sorted(m for m in ('pandas', 'pyarrow', 'sklearn', 'scipy', 'tensorflow', 'keras') "
               "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True, env=PINNED)
    assert done.stdout.strip() == "[]", done.stdout


def test_importing_a_service_module_only_defines_things_except_the_one_patch_call():
    """No threads, GC callbacks, library patches or protocol registrations at import, but for
    service.service's one explicit `patches.apply()` (BentoML needs it before the server)."""
    program = """
import gc, importlib, pkgutil, sys, threading
import service
from uvicorn import config
from bentoml._internal.server.http import traffic

before = (threading.active_count(), len(gc.callbacks), config.HTTP_PROTOCOLS["auto"])
for module in pkgutil.iter_modules(service.__path__):
    if module.name != "service":
        importlib.import_module(f"service.{module.name}")
after = (threading.active_count(), len(gc.callbacks), config.HTTP_PROTOCOLS["auto"])
print(before == after, hasattr(traffic.TimeoutMiddleware.__call__, "__wrapped__"))
importlib.import_module("service.service")
print(threading.active_count() == before[0], hasattr(traffic.TimeoutMiddleware.__call__, "__wrapped__"),
      config.HTTP_PROTOCOLS["auto"] == "service.connections:PROTOCOL")
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True, env=PINNED)
    assert done.stdout.split() == ["True", "False", "True", "True", "True"], done.stdout + done.stderr[-2000:]

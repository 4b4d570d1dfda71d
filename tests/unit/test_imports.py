"""What importing the service costs: `bentoml serve` imports it in the arbiter too, which
serves no request, so heavy libraries load only where a model needs them (the worker)."""

import subprocess
import sys


def test_importing_the_service_loads_no_model_library():
    program = ("import sys, service.service; "
               "print(sorted(m for m in ('pandas', 'pyarrow', 'sklearn', 'scipy', 'tensorflow', 'keras') "
               "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout

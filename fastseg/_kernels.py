"""Loading the Triton kernels of ``fastseg.kernels`` on first use.

Triton runs kernels on CPU tensors only in its interpreter, which it reads from the environment
(``TRITON_INTERPRET=1``) once, when triton is imported. torch imports triton early (fastseg's own
engine does, through ``torch._dynamo``), so the variable must be set before the process imports
torch's compiler stack: in the shell, or first thing in a script (``tests/conftest.py`` does).
fastseg never sets it at import: on a machine with an accelerator it would turn every Triton
kernel of the process, Inductor's included, into the interpreter's.
"""

from __future__ import annotations

import importlib
import os
import sys


def kernels_module(name: str, *, on_cpu: bool):
    """``fastseg.kernels.<name>`` (``kernels.<name>`` when running from a source checkout).

    ``on_cpu``: the kernels will run on CPU tensors, so the interpreter is required; if triton is
    not imported yet it is switched on here, else a ``RuntimeError`` says how to enable it.
    """
    if on_cpu and os.environ.get("TRITON_INTERPRET") != "1":
        if "triton" in sys.modules:
            raise RuntimeError(
                "backend='triton' on CPU tensors runs the kernels under the Triton interpreter, which needs "
                "TRITON_INTERPRET=1 in the environment before triton is imported (torch imports it with its "
                "compiler); set it in the shell or at the top of the script, or use backend='auto'"
            )
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        return importlib.import_module(f"fastseg.kernels.{name}")
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("fastseg.kernels"):
            raise  # a missing dependency (triton), not a missing package
        return importlib.import_module(f"kernels.{name}")

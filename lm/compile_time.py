"""Seconds this process has spent making programs: tracing to a jaxpr, lowering to StableHLO and XLA
compiling (or loading from the persistent cache), summed from JAX's own monitoring events. The launcher
records each stage's (``Outputs.compile_s``), the report card their total.

  before = compile_time.seconds()
  ...                                   # anything that jits
  spent = compile_time.seconds() - before
"""

import threading

import jax

EVENTS = ('/jax/core/compile/jaxpr_trace_duration',        # a top-level trace (nested jits are inside it)
          '/jax/core/compile/jaxpr_to_mlir_module_duration',
          '/jax/core/compile/backend_compile_duration')    # XLA's compile, or the persistent cache's load

_lock = threading.Lock()
_total = [0.0, False]  # seconds so far, whether the listener is registered


def _add(event: str, seconds: float, **_) -> None:
  if event in EVENTS:
    with _lock:
      _total[0] += seconds


def seconds() -> float:
  """The compile seconds of this process since the first call (which starts listening)."""
  with _lock:
    if not _total[1]:
      jax.monitoring.register_event_duration_secs_listener(_add)
      _total[1] = True
    return _total[0]

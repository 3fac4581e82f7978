"""Seconds this process has spent making programs: tracing to a jaxpr, lowering to StableHLO and XLA
compiling (or loading from the persistent cache), summed from JAX's own monitoring events from the
import of this module on. The launcher records each stage's (``Outputs.compile_s``), the report card
their total.

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
_seconds = 0.0


def _add(event: str, seconds: float, **_) -> None:
  global _seconds
  if event in EVENTS:
    with _lock:
      _seconds += seconds


jax.monitoring.register_event_duration_secs_listener(_add)


def seconds() -> float:
  """The compile seconds of this process so far."""
  return _seconds

"""The harness that drives the two sides: the task registry and surface, run orchestration and worker processes,
parity, drift, seeds and reports, and one subpackage per mode (benchmark, predict, diagnose). Nothing under
shared/, tf_impl/ or torch_impl/ imports it."""

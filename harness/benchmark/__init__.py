"""--benchmark: the parity gate first, then each side's train step timed row by row in fresh processes, against
the machine peak."""

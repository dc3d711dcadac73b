"""Running specs: the per-run context, one run end to end, the results store, executors."""

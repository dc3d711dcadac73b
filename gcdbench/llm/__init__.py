"""LLM backends: one module per backend, the interface in :mod:`gcdbench.llm.api`."""

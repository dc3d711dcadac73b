"""Feedback for LLM-in-the-loop methods: looking up the registered query kinds, rendering
them, the LLM and oracle providers, the answer ledger and cost accounting. The kinds
themselves, their templates and reply parsers are plugins and public API
(:mod:`gcdbench.api.query_kind`, :mod:`gcdbench.api.prompts`, :mod:`gcdbench.api.parsing`).

A method asks ``ctx.feedback.answer(queries)``; the run's ``--llm`` picks who answers.
"""

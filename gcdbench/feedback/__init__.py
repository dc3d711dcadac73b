"""Feedback for LLM-in-the-loop methods: query kinds, prompt templates, reply parsing, the LLM
and oracle providers, the answer ledger and cost accounting.

A method asks ``ctx.feedback.answer(queries)``; the run's ``--llm`` picks who answers.
"""

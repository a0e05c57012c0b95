"""LLM calls: the ``gen_ai`` client span and metrics of one call, and the OpenAI
SDK path that makes one for every request.

May import ``_core`` and the leaves.
"""

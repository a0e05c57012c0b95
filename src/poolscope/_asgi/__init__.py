"""The request side: the ASGI middleware that rolls a request's waits up onto its
server span, route templates, and the Starlette/FastAPI path that adds the
middleware with no code change.

May import ``_core`` and the leaves.
"""

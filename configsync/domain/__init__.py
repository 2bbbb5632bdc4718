"""The config domain's pure code: names, actors, documents and the ConfigChanged payload.

Nothing here does I/O or knows of HTTP, sessions or projections, so that the store's readers
(projections, the worker) and its writers (the commands) can share it without a cycle.
"""

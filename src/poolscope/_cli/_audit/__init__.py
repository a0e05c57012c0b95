"""``poolscope audit``: the article's checklist, run over an app's routes and its source.

``_findings`` holds the checklist (items, what a finding is); ``_routes``
reads the app object's routes, ``_source`` the code's AST; ``_run`` loads
the target and prints the checklist. ``_routes`` and ``_source`` import only
``_findings``.
"""

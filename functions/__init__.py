"""The functions: one ``functions-framework`` target per module, named like the module.

Each module is a thin adapter (parse, call one domain operation in the
``whatschat`` package, respond). ``functions/routes.py`` says which paths the
ingress sends to which target; docs/api.md explains the API.
"""

"""The storage layer: the only code that imports psycopg, redis or boto3.

Domain modules call the functions here with an open connection; helpers that
need an open transaction end in ``_txn``. See docs/architecture.md.
"""

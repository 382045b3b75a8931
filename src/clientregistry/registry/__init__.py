"""The registry's use cases: submit, read, (later) re-match, break, join, resolve.

Each orchestrates the matching engine and the store inside one transaction.
"""

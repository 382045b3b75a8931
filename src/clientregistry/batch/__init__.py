"""Batch work on files: reading patients, deduplicating them, evaluating the result."""

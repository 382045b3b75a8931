"""The matching engine: decision rules, features, comparators, blocking, scoring, training.

Pure code: no files, no network, no database. The registry and the command line feed it
parsed FHIR resources and store what it decides.
"""

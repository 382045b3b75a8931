"""The HTTP entry points: FHIR API for point-of-service systems, admin API for people."""

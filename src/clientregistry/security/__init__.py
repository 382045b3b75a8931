"""Security of the registry: the certificate authority behind mutual TLS (``certificates``) and
the users' argon2 password hashes (``passwords``)."""

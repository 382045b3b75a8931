"""The web UI for data managers, served under ``/ui/`` by ``clientregistry serve``.

Server-rendered pages (Jinja2 templates, no build step, a little JavaScript that only
enhances them), translated into English and French with Babel catalogues, over the same
HTTPS port as the FHIR and admin APIs. Pages call the registry's use cases
(:mod:`clientregistry.registry`), as the admin API does, never the database; a person signs
in with a password (or single sign-on) and gets a browser session
(:mod:`clientregistry.ui.session`). Roles are checked on the server for every page and action,
exactly as on the admin API.
"""

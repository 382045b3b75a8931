"""clientregistry: an open client registry (master patient index) for FHIR R4."""

from clientregistry.errors import ClientRegistryError, InvalidRecord, RuleSetError
from clientregistry.matching.rules import DecisionRules, default_rules, load_rules

__version__ = "0.1.0"

__all__ = [
    "ClientRegistryError",
    "DecisionRules",
    "InvalidRecord",
    "RuleSetError",
    "__version__",
    "default_rules",
    "load_rules",
]

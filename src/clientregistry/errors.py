"""The exceptions the client registry raises, one tree for every layer.

    ClientRegistryError
     ├── ConfigError                 a configuration file is wrong
     │    └── RuleSetError           a decision-rules file is wrong (lists every problem)
     └── InvalidRecord               an input record cannot be used (not JSON, not a Patient, ...)

Each carries structured fields so that the command line can print file/line/field and the
API can build an OperationOutcome from the same object.
"""

from __future__ import annotations

from dataclasses import dataclass


class ClientRegistryError(Exception):
    """Base class of every error the client registry raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a configuration: where it is and what is wrong."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class ConfigError(ClientRegistryError):
    """A configuration file is wrong; ``problems`` lists every problem found."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


class RuleSetError(ConfigError):
    """A decision-rules file is wrong (unknown algorithm, bad FHIRPath, bad threshold ...)."""


class InvalidRecord(ClientRegistryError):
    """An input record cannot be used; ``line`` is 1-based where known."""

    def __init__(self, message: str, *, line: int | None = None, record_id: str | None = None):
        self.message = message
        self.line = line
        self.record_id = record_id
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{where}{message}")

"""Machine-readable errors of the ranking core: every one carries a stable ``code``."""

from __future__ import annotations


class RankingError(Exception):
    """Base error; ``code`` is stable for callers, ``field`` names the offending input."""

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (field {field})" if field else ""))
        self.code = code
        self.field = field
        self.message = message

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "field": self.field, "message": self.message}


class RankingInputError(RankingError, ValueError):
    """An event or sample is malformed (missing key, wrong type, naive datetime...)."""


class ExportVerificationError(RankingError):
    """A TFLite artifact does not reproduce the TF model within tolerance."""


class ModelIntegrityError(RankingError):
    """Downloaded model bytes or manifest do not match (sha256, signature, config)."""


class RegistryError(RankingError):
    """An illegal model-version lifecycle transition."""

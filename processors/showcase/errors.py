"""Machine-readable input errors for the showcase core."""
from __future__ import annotations


class ShowcaseInputError(ValueError):
    """Bad input record: carries a stable ``code`` plus the offending field and record id."""

    def __init__(self, code: str, message: str, *, field: str | None = None, record_id: str | None = None):
        super().__init__(message)
        self.code = code
        self.field = field
        self.record_id = record_id

    def to_dict(self) -> dict[str, str | None]:
        return {"error": self.code, "message": str(self), "field": self.field, "record_id": self.record_id}

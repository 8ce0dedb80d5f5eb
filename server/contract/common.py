"""Pieces several response models share: the page metadata of every paginated list."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def json_integer(value: Any) -> Any:
    """A ``mode="before"`` validator for integer fields of ``strict=True`` bodies, so that they take what JSON
    Schema calls an integer: ``5`` and ``5.0``, never ``"5"`` or ``true`` (pydantic's lax mode takes the
    string, its strict mode refuses the float)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class Model(BaseModel):
    """Base of the response models: unknown fields are refused, so an answer cannot drift from its model."""

    model_config = ConfigDict(extra="forbid")


class PageMeta(Model):
    page: int = Field(ge=1)
    per_page: int = Field(ge=1)
    total: int = Field(ge=0)
    total_pages: int = Field(ge=0)

    @classmethod
    def of(cls, page: int, per_page: int, total: int) -> PageMeta:
        return cls(page=page, per_page=per_page, total=total, total_pages=-(-total // per_page))

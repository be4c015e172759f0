"""The base of every config model: strict types, unknown keys refused with the valid ones
listed, immutable once built (a plan's trials cannot drift after validation)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError


class Strict(BaseModel):
    """Config section: ``extra`` keys are an error naming the valid keys; numbers are not
    parsed from strings; instances are frozen (derive a changed copy by validating a dict)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data):
        if isinstance(data, dict):
            unknown = sorted(str(k) for k in set(data) - set(cls.model_fields))
            if unknown:
                raise PydanticCustomError(
                    "unknown_key", "unknown key(s) {keys}{hint}; valid keys are: {valid}",
                    {"keys": ", ".join(unknown), "valid": ", ".join(cls.model_fields),
                     "hint": cls._unknown_hint(data, unknown)},
                )
        return data

    @classmethod
    def _unknown_hint(cls, data: dict, unknown: list[str]) -> str:
        """Extra words for the unknown-key error (a section can say where a key belongs)."""
        return ""

    def dump(self) -> dict:
        """Plain data (JSON types): what YAML files, MLflow and Tune configs hold."""
        return self.model_dump(mode="json")


# constrained scalar types used across the models
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
UnitFloat = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]

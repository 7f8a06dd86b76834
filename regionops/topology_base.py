"""The topology's building blocks: strict models, names, and references to secrets.

Shared by :mod:`regionops.topology` and the settings modules beside it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, cast

from pydantic import BaseModel, ConfigDict, Field

from regionops.errors import ConfigurationError

NAME_PATTERN = r"^[a-z][a-z0-9-]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class Strict(BaseModel):
    """Base for topology models: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(Strict):
    """Where a secret lives.  Exactly one of the sources; the value never enters the file."""

    env: str | None = Field(None, description="environment variable holding the secret")
    prefect_secret: str | None = Field(None, description="name of a Prefect Secret block")
    file: str | None = Field(None, description="file holding the secret (mounted secret)")

    def model_post_init(self, __context: Any) -> None:
        given = [k for k in ("env", "prefect_secret", "file") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("a secret reference needs exactly one of env, prefect_secret, file")

    def describe(self) -> str:
        """Where the secret is read from, safe to log."""
        if self.env:
            return f"env:{self.env}"
        if self.prefect_secret:
            return f"prefect-secret:{self.prefect_secret}"
        return f"file:{self.file}"

    def resolve(self) -> str:
        """Read the secret's value.  Raises ConfigurationError naming the source if missing."""
        if self.env:
            value = os.environ.get(self.env)
            if not value:
                raise ConfigurationError(f"secret {self.describe()} is not set")
            return value
        if self.file:
            try:
                return Path(self.file).read_text().strip()
            except OSError as exc:
                raise ConfigurationError(f"secret {self.describe()} cannot be read: {exc.strerror}") from exc
        from prefect.blocks.system import Secret  # only here: Prefect is optional below flows

        name = self.prefect_secret
        if name is None:  # model_post_init allows exactly one source: unreachable
            raise ConfigurationError("a secret reference needs exactly one of env, prefect_secret, file")
        try:
            # Called from sync code: Block.load returns the block (its stub says "or a coroutine").
            return cast("Secret[Any]", Secret.load(name)).get()
        except Exception as exc:  # noqa: BLE001 - any failure to load is a config problem
            raise ConfigurationError(f"secret {self.describe()} cannot be loaded: {exc}") from exc

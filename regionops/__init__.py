"""regionops: runbooks as code for a three-region PostgreSQL web application."""

__version__ = "0.1.0"

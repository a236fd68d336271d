"""identity: an OpenID Connect token-exchange service."""

__version__ = "0.2.0"

"""paynow-service: PayNow webhooks to wallet points, exactly once."""

from paynow_service.hookspecs import hookimpl

__all__ = ["hookimpl"]

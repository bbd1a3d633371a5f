"""Small asyncio helpers shared by the runtime and the plugins."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel ``tasks`` (None ones skipped) and wait until each has ended; what they raised on the
    way out is theirs, not the caller's. A cancellation of the caller itself still propagates."""
    live = [t for t in tasks if t is not None]
    for t in live:
        t.cancel()
    await asyncio.gather(*live, return_exceptions=True)

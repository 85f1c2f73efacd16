"""The per-request processing deadline (``SER_REQUEST_TIMEOUT_S``); the queue bound is
:class:`app.middleware.Admission`."""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

from app.errors import APIError
from app.middleware import RETRY_AFTER_S

T = TypeVar("T")


async def within(seconds: float, work: Awaitable[T]) -> T:
    """``await work``, or 503 ``timeout`` with Retry-After when it takes longer than ``seconds``.

    503 rather than 504: the service is not a gateway, and the cause is its own load (the request waited
    behind others), which is what 503 and Retry-After tell a client or load balancer. Work already running on
    a worker thread finishes unobserved; a job still queued is skipped (``BatchingPipeline``).
    """
    try:
        return await asyncio.wait_for(work, seconds)
    except asyncio.TimeoutError:
        raise APIError(503, "timeout", f"processing took longer than {seconds:g} s (SER_REQUEST_TIMEOUT_S): "
                       f"retry after {RETRY_AFTER_S} s", headers={"Retry-After": str(RETRY_AFTER_S)}) from None

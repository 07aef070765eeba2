"""``Signal``: an actor that tasks and calls block on until the test sends it (Ray's tests' helper)."""

from __future__ import annotations

import asyncio

import peer as ray


@ray.remote(num_cpus=0)
class Signal:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def wait(self) -> None:
        await self.event.wait()

    async def send(self) -> None:
        self.event.set()

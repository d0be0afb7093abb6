"""Driving the chat app through Textual's pilot.

async with app.run_test(size=(100, 32)) as pilot:
    await say(pilot, "write hello")      # type it, press Enter, wait for the whole reply
"""

from __future__ import annotations


async def settle(pilot, rounds: int = 600) -> None:
    """Let the reply worker finish and the UI process everything it posted."""
    await pilot.app.workers.wait_for_complete()
    for _ in range(rounds):
        await pilot.pause()
        if not pilot.app.chat.generating:
            break
    await pilot.pause()


async def say(pilot, text: str, rounds: int = 600) -> None:
    """Type a message into the chat app, send it, and wait until the reply is done."""
    pilot.app.chat.input.text = text
    pilot.app.chat.input.focus()
    await pilot.press("enter")
    await settle(pilot, rounds)

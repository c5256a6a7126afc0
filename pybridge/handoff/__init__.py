"""Handoffs: big payloads that travel through files in /dev/shm instead of frames.

- :mod:`~pybridge.handoff.shm`: the OS object, a shared-memory file (a
  ``Segment``) created, mapped, written and removed;
- :mod:`~pybridge.handoff.results`: the handoff of a result (granted when the
  client allows it, capped at :data:`~pybridge.handoff.results.MAX_HANDOFF_BYTES`)
  and the janitor that removes handoffs the client never took.
"""

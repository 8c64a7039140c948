"""The protocol's ops, one module per subject. Each op parses its fields,
calls a service or a selector, and formats the result; the connection
(``messaging.connection``) runs them and writes the replies.

To add an op: write an ``@op("name")`` function in the module of its
subject (or a new module, imported below). Nothing else changes.
"""

from . import messages, people, rooms, session
from .registry import OPS, Connection, Identity, Op, Reply, op

__all__ = ["OPS", "Connection", "Identity", "Op", "Reply", "messages", "op", "people", "rooms", "session"]

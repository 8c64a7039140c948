"""Numbers of the chat protocol (docs/protocol.md) that the server and the
terminal client must agree on. No Django here: chatclient imports it."""

from __future__ import annotations

# WebSocket close codes the server ends a connection with.
CLOSE_NORMAL = 1000  # after `logout`'s ok
CLOSE_POLICY = 1008  # policy: anonymous past the login deadline, or too much left unread
CLOSE_TRY_LATER = 1013  # try again later: the server cannot reach its channel layer (Redis) just now
CLOSE_RESTART = 1012  # service restart: the process is stopping; reconnect (elsewhere)
CLOSE_REPLACED = 4001  # after session_replaced: the user logged in elsewhere
CLOSE_ENDED = 4003  # after session_ended: logged out, password changed, deactivated, ...

# The longest username, in characters (accounts.names.USERNAME_MAX: the
# server's field, forms and frames).
USERNAME_MAX = 150

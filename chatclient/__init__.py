"""Terminal client for the chat (protocol v1). No Django needed: it only
speaks the WebSocket protocol, to any of our servers, local or remote."""

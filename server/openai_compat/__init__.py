"""OpenAI's chat-completions wire format over our provider router (``POST /v1/chat/completions``,
``GET /v1/models``): ``request`` turns OpenAI's body into a ``ChatRequest``, ``answer`` turns the router's
events into OpenAI's completion object or its ``chat.completion.chunk`` stream. docs/operations.md says why
this is a plain completion with failover and not a turn of the agent loop."""

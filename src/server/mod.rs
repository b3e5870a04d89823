//! The HTTP side: hyper service, routing, passthrough, SSE and OpenAI-shaped errors.

//! The OpenAI-compatible data plane: `POST /v1/chat/completions` (JSON or SSE) and the WebSocket
//! variant, in front of the worker pool, with every request metered.

pub mod admission;
pub mod chat;
pub mod stream;
pub mod ws;

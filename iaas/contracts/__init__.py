"""The only surface the contexts share: types, each context's public functions and
errors, the integration events, and the in-process event bus with its outbox."""

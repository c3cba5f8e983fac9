"""HTTP plumbing shared by every context's API: problem details, idempotency keys,
pagination, authentication endpoints. Imports no context."""

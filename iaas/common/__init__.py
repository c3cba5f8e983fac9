"""Database helpers shared by every context: bounded transaction retries, lock helpers."""

# The two commands a newcomer needs. Both set everything up and are safe to repeat.
.PHONY: run test lint format

run:  ## set up and serve the app on http://127.0.0.1:8000 (SQLite unless DATABASE_URL)
	scripts/run.sh

test:  ## set up and run lint, import boundaries and the whole test suite on PostgreSQL
	scripts/test.sh

format:  ## apply ruff's formatting and safe fixes
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

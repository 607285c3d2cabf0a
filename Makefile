.PHONY: run test lint

run:  ## install and run the service (embedded: SQLite, no other service)
	scripts/run

test:  ## install test dependencies and run every test
	scripts/test

lint:  ## ruff: lint, and check that the code is formatted
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

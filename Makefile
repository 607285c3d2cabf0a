.PHONY: run test lint

run:  ## install and run the service (embedded: SQLite, no other service)
	scripts/run

test:  ## install test dependencies and run every test
	scripts/test

# mypy's Django plugin imports the settings: the embedded ones, with a data folder of their own.
lint:  ## ruff: lint, and check that the code is formatted; mypy: type-check billing/ and relay/
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
	env -u DATABASE_URL -u REDIS_URL SLUICE_DATA_DIR="$(CURDIR)/data/lint" .venv/bin/mypy

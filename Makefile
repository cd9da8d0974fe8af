.PHONY: test lint serve embedded calibrate report parity

test:            ## the test suite (what CI runs, after installing)
	python -m pytest -q

lint:
	ruff check service training tests

serve:           ## the service on the embedded models
	dnabert-serve serve

parity:          ## our DNABERT-2 against the published fixture
	dnabert-train check-parity ../shared/fixtures/dnabert2_parity_a

embedded:        ## re-train and export the embedded models (about 75 minutes on 2 CPU cores)
	dnabert-train embedded --models models --runs runs/embedded

calibrate:       ## reliability, Brier and dev thresholds into the cards; then the default promoter model (task.json)
	dnabert-train calibrate --models models
	dnabert-train choose-default --models models

report:
	dnabert-train report --models models --output models/README.md

# Prerequisites of tests/integration/test_spec_examples.py, which runs the spec's own client
# examples against the gateway: Node's `ws` package (the browser WebSocket for the JavaScript
# examples) and a separate venv with the legacy `websockets` client (< 14: the spec's Python
# class calls `websocket.closed`). Stamp files make a second `make test` do nothing here.
SPEC_EXAMPLES := tests/spec_examples
SPEC_VENV     := .venv-spec

TEST_DEPS += $(SPEC_EXAMPLES)/node_modules/.installed $(SPEC_VENV)/.installed

$(SPEC_EXAMPLES)/node_modules/.installed: $(SPEC_EXAMPLES)/package.json $(SPEC_EXAMPLES)/package-lock.json
	npm ci --prefix $(SPEC_EXAMPLES) --no-audit --no-fund
	touch $@

$(SPEC_VENV)/.installed: $(SPEC_EXAMPLES)/requirements.txt
	rm -rf $(SPEC_VENV)
	$(or $(PYTHON),python3) -m venv $(SPEC_VENV)
	$(SPEC_VENV)/bin/python -m pip install --quiet -r $(SPEC_EXAMPLES)/requirements.txt
	touch $@

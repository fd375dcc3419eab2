# Prerequisites of tests/openapi/test_openapi_lint.py, which lints the REST API's OpenAPI
# document: Redocly CLI and Spectral (pinned in package.json and package-lock.json). The
# stamp file makes a second `make test` do nothing here.
OPENAPI_LINT := tests/openapi

TEST_DEPS += $(OPENAPI_LINT)/node_modules/.installed

$(OPENAPI_LINT)/node_modules/.installed: $(OPENAPI_LINT)/package.json $(OPENAPI_LINT)/package-lock.json
	npm ci --prefix $(OPENAPI_LINT) --no-audit --no-fund
	touch $@

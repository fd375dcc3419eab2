# Security checks of issue 8, run by `make test` before the tests (the Makefile includes
# tests/*/deps.mk and makes `test` depend on every target added to TEST_DEPS):
# bandit over the package (settings in tests/security/bandit.yaml) and pip-audit over the
# installed packages (tests/security/pip_audit.py: retries, fails on any known
# vulnerability; CAROUSEL_AUDIT_STRICT=1 also fails when the service is unreachable).
TEST_DEPS += security-checks
.PHONY: security-checks

security-checks: $(STAMP)
	$(BIN)/bandit -q -r carousel_gateway -c tests/security/bandit.yaml
	$(BIN)/python tests/security/pip_audit.py

# Security checks of issue 8, run by `make test` before the tests (the Makefile includes
# tests/*/deps.mk and makes `test` depend on every target added to TEST_DEPS):
# bandit over the package (tests/security/bandit_check.py: settings in bandit.yaml, one line
# when clean, every finding in full otherwise) and pip-audit over the installed packages
# (tests/security/pip_audit.py: retries, fails on any known vulnerability, one line saying
# how many packages were really audited; CAROUSEL_AUDIT_STRICT=1 also fails when the service
# is unreachable or a package could not be audited).
TEST_DEPS += security-checks
.PHONY: security-checks

security-checks: $(STAMP)
	$(BIN)/python tests/security/bandit_check.py
	$(BIN)/python tests/security/pip_audit.py

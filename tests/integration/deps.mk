# tests/integration/test_modbus_simulator.py also reads the Modbus simulator with Debian's
# mbpoll (libmodbus), a client that is not ours; the test skips only when it is absent.
TEST_DEPS += /usr/bin/mbpoll
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

/usr/bin/mbpoll:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq mbpoll

# Prometheus' promtool (Debian's prometheus package; the tests never start its service)
# lints the /metrics exposition (tests/integration/promtool.py).
TEST_DEPS += /usr/bin/promtool

/usr/bin/promtool:
	$(SUDO) apt-get -o DPkg::Lock::Timeout=600 update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends prometheus

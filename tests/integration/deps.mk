# tests/integration/test_modbus_simulator.py also reads the Modbus simulator with Debian's
# mbpoll (libmodbus), a client that is not ours; the test skips only when it is absent.
TEST_DEPS += /usr/bin/mbpoll
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

/usr/bin/mbpoll:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq mbpoll

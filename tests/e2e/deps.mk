# Browser tests drive Debian's Chromium (never a browser downloaded by a test tool).
TEST_DEPS += /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

/usr/bin/chromium:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

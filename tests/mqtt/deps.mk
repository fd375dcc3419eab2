# Prerequisites of tests/mqtt: Debian's mosquitto (the tests start their own broker on a
# free loopback port with its own config file, never the system service) and an
# independent Sparkplug B consumer in Node (Eclipse Tahu's sparkplug-payload and the mqtt
# client, pinned in package.json and package-lock.json). Stamp files make a second
# `make test` do nothing here.
MQTT_TESTS := tests/mqtt
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

TEST_DEPS += /usr/sbin/mosquitto $(MQTT_TESTS)/node_modules/.installed

/usr/sbin/mosquitto:
	$(SUDO) apt-get -o DPkg::Lock::Timeout=600 update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -o DPkg::Lock::Timeout=600 install -y -qq mosquitto

$(MQTT_TESTS)/node_modules/.installed: $(MQTT_TESTS)/package.json $(MQTT_TESTS)/package-lock.json
	npm ci --prefix $(MQTT_TESTS) --no-audit --no-fund
	touch $@

# The journal tests run on PostgreSQL too (tests/postgresql.py starts Debian's server in a
# temporary directory, on loopback). Only the server programs are needed: no cluster of
# the package's own is used.
TEST_DEPS += /usr/lib/postgresql
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

/usr/lib/postgresql:
	$(SUDO) apt-get -o DPkg::Lock::Timeout=600 update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -o DPkg::Lock::Timeout=600 install -y -qq postgresql

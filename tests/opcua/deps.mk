# Prerequisites of tests/opcua: an independent OPC UA client, node-opcua-client (pinned in
# package.json and package-lock.json to a release that runs on Node 20). The stamp file makes
# a second `make test` do nothing here.
OPCUA_CLIENT := tests/opcua

TEST_DEPS += $(OPCUA_CLIENT)/node_modules/.installed

$(OPCUA_CLIENT)/node_modules/.installed: $(OPCUA_CLIENT)/package.json $(OPCUA_CLIENT)/package-lock.json
	npm ci --prefix $(OPCUA_CLIENT) --no-audit --no-fund
	touch $@

"""The OPC UA server (docs/opcua.md): a north interface beside the WebSocket and REST ones.

``server`` wires asyncua; the rest is pure and tested without sockets: the address space
as data (``model``), our codes as StatusCodes (``results``), who may do what
(``permissions``), passwords (``passwords``). ``asyncua_internals`` is the one module that
touches asyncua's internals. Import ``server`` only when ``[opcua] enabled``: asyncua is
loaded then, not for every gateway.
"""

__all__: list[str] = []

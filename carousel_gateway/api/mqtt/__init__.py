"""The MQTT north interface: a Sparkplug B 3.0 edge node (or plain JSON) on a broker.

``codec``, ``device``, ``session`` and ``json_node`` are pure (sans-I/O) and tested without
sockets; ``link`` puts them on a broker with aiomqtt; ``status`` is what health, metrics
and the dashboard read. Nothing is imported here, so reading the status loads no client.
"""

__all__: list[str] = []

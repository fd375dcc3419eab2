# ruff: noqa
# The spec's "Cliente Python Asíncrono" example (imports and class only), copied byte for byte from
# websocket-api.md: do not reformat or lint-fix it. Run by
# tests/integration/test_spec_examples.py (see run_python_example.py).
# ---- verbatim from the spec below this line ----
import asyncio
import websockets
import json
from datetime import datetime

class CarouselWebSocketClient:
    def __init__(self, uri="ws://localhost:8765"):
        self.uri = uri
        self.websocket = None
        self.running = False

    async def connect(self):
        """Conectar al WebSocket"""
        try:
            self.websocket = await websockets.connect(self.uri)
            self.running = True
            print("Conectado al WebSocket")
            
            # Suscribirse a actualizaciones
            await self.subscribe_to_updates()
            
            # Escuchar mensajes
            await self.listen()
            
        except Exception as e:
            print(f"Error de conexión: {e}")

    async def listen(self):
        """Escuchar mensajes del servidor"""
        try:
            async for message in self.websocket:
                data = json.loads(message)
                await self.handle_message(data)
        except websockets.exceptions.ConnectionClosed:
            print("Conexión cerrada")
            self.running = False

    async def handle_message(self, data):
        """Manejar mensajes recibidos"""
        message_type = data.get('type')
        
        if message_type == 'welcome':
            print(f"Bienvenida: {data}")
        elif message_type == 'status_broadcast':
            await self.on_status_update(data['status'])
        elif message_type == 'command_result':
            await self.on_command_result(data)
        elif message_type == 'error':
            print(f"Error del servidor: {data}")

    async def subscribe_to_updates(self):
        """Suscribirse a actualizaciones de estado"""
        message = {
            "type": "subscribe",
            "subscription_type": "status_updates",
            "timestamp": datetime.now().isoformat()
        }
        await self.send(message)

    async def send_command(self, machine_id, command, argument):
        """Enviar comando a una máquina"""
        message = {
            "type": "send_command",
            "machine_id": machine_id,
            "command": {
                "command": command,
                "argument": argument
            },
            "timestamp": datetime.now().isoformat()
        }
        await self.send(message)

    async def get_status(self, machine_id):
        """Obtener estado de una máquina"""
        message = {
            "type": "get_status",
            "machine_id": machine_id,
            "timestamp": datetime.now().isoformat()
        }
        await self.send(message)

    async def send(self, data):
        """Enviar mensaje al servidor"""
        if self.websocket and not self.websocket.closed:
            await self.websocket.send(json.dumps(data))
        else:
            print("WebSocket no está conectado")

    async def on_status_update(self, status):
        """Manejar actualizaciones de estado"""
        print(f"Estado actualizado: {status}")

    async def on_command_result(self, result):
        """Manejar resultados de comandos"""
        print(f"Resultado de comando: {result}")

    async def disconnect(self):
        """Desconectar del WebSocket"""
        self.running = False
        if self.websocket:
            await self.websocket.close()

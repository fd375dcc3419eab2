# ruff: noqa
# The spec's "Python con websockets" example (whole snippet), copied byte for byte from
# websocket-api.md: do not reformat or lint-fix it. Run by
# tests/integration/test_spec_examples.py (see run_python_example.py).
# ---- verbatim from the spec below this line ----
import asyncio
import websockets
import json

async def connect_websocket():
    uri = "ws://localhost:8765"
    async with websockets.connect(uri) as websocket:
        # Recibir mensaje de bienvenida
        welcome = await websocket.recv()
        print(f"Bienvenida: {welcome}")
        
        # Enviar mensaje
        message = {
            "type": "get_status",
            "machine_id": "machine_1",
            "timestamp": "2025-01-27T10:30:00.000Z"
        }
        await websocket.send(json.dumps(message))
        
        # Escuchar respuestas
        async for message in websocket:
            data = json.loads(message)
            print(f"Recibido: {data}")

# Ejecutar
asyncio.run(connect_websocket())

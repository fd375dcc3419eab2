class CarouselWebSocketClient {
    constructor(url = 'ws://localhost:8765') {
        this.url = url;
        this.ws = null;
        this.reconnectInterval = 5000;
        this.maxReconnectAttempts = 5;
        this.reconnectAttempts = 0;
    }

    connect() {
        this.ws = new WebSocket(this.url);
        
        this.ws.onopen = (event) => {
            console.log('Conectado al WebSocket');
            this.reconnectAttempts = 0;
            this.subscribeToUpdates();
        };

        this.ws.onmessage = (event) => {
            const data = JSON.parse(event.data);
            this.handleMessage(data);
        };

        this.ws.onclose = (event) => {
            console.log('Conexión cerrada:', event.code);
            this.reconnect();
        };

        this.ws.onerror = (error) => {
            console.error('Error WebSocket:', error);
        };
    }

    handleMessage(data) {
        switch(data.type) {
            case 'welcome':
                console.log('Bienvenida recibida:', data);
                break;
            case 'status_broadcast':
                this.onStatusUpdate(data.status);
                break;
            case 'command_result':
                this.onCommandResult(data);
                break;
            case 'error':
                console.error('Error del servidor:', data);
                break;
        }
    }

    subscribeToUpdates() {
        this.send({
            type: 'subscribe',
            subscription_type: 'status_updates',
            timestamp: new Date().toISOString()
        });
    }

    sendCommand(machineId, command, argument) {
        this.send({
            type: 'send_command',
            machine_id: machineId,
            command: {
                command: command,
                argument: argument
            },
            timestamp: new Date().toISOString()
        });
    }

    getStatus(machineId) {
        this.send({
            type: 'get_status',
            machine_id: machineId,
            timestamp: new Date().toISOString()
        });
    }

    send(data) {
        if (this.ws && this.ws.readyState === WebSocket.OPEN) {
            this.ws.send(JSON.stringify(data));
        } else {
            console.warn('WebSocket no está conectado');
        }
    }

    reconnect() {
        if (this.reconnectAttempts < this.maxReconnectAttempts) {
            this.reconnectAttempts++;
            console.log(`Intentando reconectar... (${this.reconnectAttempts}/${this.maxReconnectAttempts})`);
            setTimeout(() => this.connect(), this.reconnectInterval);
        } else {
            console.error('Máximo número de intentos de reconexión alcanzado');
        }
    }

    onStatusUpdate(status) {
        // Implementar lógica de actualización de UI
        console.log('Estado actualizado:', status);
    }

    onCommandResult(result) {
        // Implementar lógica de respuesta a comandos
        console.log('Resultado de comando:', result);
    }

    disconnect() {
        if (this.ws) {
            this.ws.close();
        }
    }
}

// Uso
const client = new CarouselWebSocketClient();
client.connect();

// Enviar comando
client.sendCommand('machine_1', 1, 25);

// Obtener estado
client.getStatus('machine_1');

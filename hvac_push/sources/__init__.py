"""Sources of samples: the producer supervisor, the simulator, Modbus TCP and MQTT. They see only the publisher."""

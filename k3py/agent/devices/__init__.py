"""Devices on the node: the MQTT event bus (eventbus.py: embedded amqtt broker or external
mosquitto) and the KubeEdge device twin bookkeeping it drives (twin.py, with twinrecords.py,
twinrules.py, twinobjects.py and coalescer.py; no I/O)."""

"""MQTT: the exporter of every series with Home Assistant discovery (``[mqtt]``).

:mod:`.config` holds the settings (imported with the file), :mod:`.discovery` the topics and
discovery configs, :mod:`.exporter` the service the hub runs. Only the exporter imports the
MQTT client, and only the hub imports the exporter, when ``[mqtt] url`` is set.
"""

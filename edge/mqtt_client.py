"""One way to build the station's paho client: protocol, credentials and TLS.

Shared by the publisher and ``flowedge check``, so the check connects exactly as
the station will.
"""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt

from flowedge.edge.config import MQTTConfig


def new_client(c: MQTTConfig, client_id: str, protocol: int) -> mqtt.Client:
    """A paho client (callback API 2) with the configured user, password and TLS files."""
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        clean_session=None if protocol == mqtt.MQTTv5 else True,
    )
    username = c.resolved_username()
    if username:
        client.username_pw_set(username, c.resolved_password())
    if c.tls is not None:
        client.tls_set(
            ca_certs=str(c.tls.ca_file) if c.tls.ca_file else None,
            certfile=str(c.tls.cert_file) if c.tls.cert_file else None,
            keyfile=str(c.tls.key_file) if c.tls.key_file else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        client.tls_insecure_set(c.tls.insecure)
    return client

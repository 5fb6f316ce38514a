"""Federation: the server-server API's core side (keys, transport, inbound PDUs and
EDUs, the outbound queues, joins to other servers' rooms). `service.Federation` holds the
parts and is attached as `hs.federation` when `federation.enabled` is true."""

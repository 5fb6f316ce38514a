"""The ERP bridge: an application service, in its own process, that mirrors ERP tenants,
users and business objects into Matrix spaces, users and rooms, and passes messages both
ways. It talks to the homeserver only through the public client-server and
application-service APIs and imports nothing of the server's packages."""

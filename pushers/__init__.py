"""Pushers: delivery of users' notifications to their push gateways (the push-gateway
API, `POST {url}` = `/_matrix/push/v1/notify`). A background job that reads the push
actions the persist path stored, so it could later run in a process of its own.

`registry.py` holds every pusher and answers the client API; `http_pusher.py` is one
pusher's delivery loop; `notification.py` builds the request body."""

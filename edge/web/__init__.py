"""The station's own web page (the ``web`` sink): live view, trend, counters, review queue,
history search. Standard library HTTP server, server-sent events, static assets in
``static/``; login with scrypt-hashed passwords, roles, expiring sessions, CSRF tokens.
docs/web.md."""

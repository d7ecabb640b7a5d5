#!/bin/sh
# The page app.py printed in the seed: a greeting with $NAME (set by the Dockerfile's ENV) and the
# hostname of the container serving it.
printf 'Content-Type: text/html\r\n\r\n'
printf '<h3>Hello %s!</h3><b>Hostname:</b> %s<br/>\n' "${NAME:-world}" "$(hostname)"

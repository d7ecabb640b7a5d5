ARG  CODE_VERSION=latest
FROM base:${CODE_VERSION}
CMD  /code/run-app

FROM extras:${CODE_VERSION}
CMD  /code/run-extras

FROM --platform=$BUILDPLATFORM golang:1.22 AS Build
from ubuntu as base
FROM base AS dev
FROM scratch

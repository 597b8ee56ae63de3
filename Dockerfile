# rill in a container: built on Debian 12, run as the non-root user `rill`.
#   docker build -t rill .
#   docker run -d --name rill --stop-timeout 30 --env-file rill.env \
#     -v $PWD/flows:/srv/rill/flows:ro -v $PWD/config:/srv/rill/config:ro -v rill-data:/srv/rill/data \
#     -p 8080:8080 -p 127.0.0.1:9090:9090 rill
# Webhooks on 8080; the admin listener (/healthz, /readyz, /metrics, admin API and
# console) on 9090. docs/operations.md says more.

# ---- build: the build packages of debian-packages.txt (its "# build" section) ----
FROM debian:12-slim AS build
WORKDIR /src
COPY debian-packages.txt tools/install-deps.sh tools/
RUN sed -n '/^# build/,/^# test/p' tools/debian-packages.txt > tools/build-packages.txt \
    && tools/install-deps.sh tools/build-packages.txt \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN make all

# ---- runtime: the shared libraries rill links to, curl for the health check, and
# lua-check for `rill check` (its static analysis) ----
FROM debian:12-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       libluajit2-5.1-2 libuv1 libcurl4 libssl3 libpq5 libsqlite3-0 libhttp-parser2.9 \
       tzdata ca-certificates curl lua-check \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --user-group --home-dir /srv/rill --shell /usr/sbin/nologin rill \
    && mkdir -p /srv/rill/flows /srv/rill/config /srv/rill/data \
    && chown rill:rill /srv/rill/data
COPY --from=build /src/build/rill /usr/local/bin/rill
COPY config/rill.lua /srv/rill/config/rill.lua
COPY flows/ /srv/rill/flows/
WORKDIR /srv/rill
# The store (sqlite:data/rill.db) and the flows' SQLite databases live in data/;
# set RILL_STORE to a postgres:// URL (in the env file) to run several instances.
ENV RILL_LISTEN=0.0.0.0:8080 \
    RILL_ADMIN_LISTEN=0.0.0.0:9090 \
    RILL_LOG_FORMAT=json
VOLUME ["/srv/rill/flows", "/srv/rill/config", "/srv/rill/data"]
USER rill
EXPOSE 8080 9090
# SIGTERM drains (drain_timeout, 10 s by default): give `docker stop` more than that.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:9090/healthz || exit 1
CMD ["rill", "serve", "--config", "/srv/rill/config/rill.lua", "--flows", "/srv/rill/flows"]

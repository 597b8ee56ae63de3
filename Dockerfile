# rill in a container: build on Debian 12, run as a non-root user.
# Flows and config are mounted:  docker run -v $PWD/flows:/srv/rill/flows -p 8080:8080 rill
FROM debian:12-slim AS build
WORKDIR /src
COPY debian-packages.txt tools/install-deps.sh tools/
RUN apt-get update && tools/install-deps.sh tools/debian-packages.txt
COPY . .
RUN make all

FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      libluajit2-5.1-2 libuv1 libcurl4 libssl3 libpq5 libsqlite3-0 libhttp-parser2.9 tzdata ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /srv/rill --shell /usr/sbin/nologin rill
COPY --from=build /src/build/rill /usr/local/bin/rill
COPY config/rill.lua /srv/rill/config/rill.lua
WORKDIR /srv/rill
USER rill
ENV RILL_LISTEN=0.0.0.0:8080 RILL_LOG_FORMAT=json
EXPOSE 8080
VOLUME ["/srv/rill/flows"]
CMD ["rill", "serve", "--config", "/srv/rill/config/rill.lua", "--flows", "/srv/rill/flows"]

# The OpenAnalyst server's own image.
#
#   online:  docker build -t openanalyst/server .            (pip installs from PyPI)
#   offline: sandbox_images/build-server-image.sh            (local Debian base + a wheelhouse made on the host)
#
# Run it (the sandbox image must already exist on that engine: `python -m toolrunner.image` on the host):
#   docker run -d -p 3080:3080 \
#     -v /var/run/docker.sock:/var/run/docker.sock --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -v /srv/openanalyst:/srv/openanalyst -e OPENANALYST_DATA_DIR=/srv/openanalyst openanalyst/server
#
# Safer: deploy/compose.yaml runs this image with Docker reached only through an allow-listing socket proxy
# (docs/deployment.md says what that does and does not protect against).
#
# RISK: the server manages the tenants' sandbox containers, so it needs the Docker socket. Whoever controls
# the socket controls the host (a container with the host's / mounted is one API call away): a compromise of
# this server is a compromise of the host. Keep it off untrusted networks, put authentication in front of it,
# or point it at a dedicated engine (DOCKER_HOST to a rootful dockerd in its own VM).
#
# The data directory must be mounted at the SAME path inside and outside: the engine resolves the tenants'
# workspace bind mounts on the host, using the path the server sees.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 LANG=C.UTF-8
COPY . /src
# A wheelhouse in the context (made by build-server-image.sh) means no network; otherwise PyPI.
RUN set -eu; \
    python3 -m venv /opt/openanalyst/venv; \
    if ls /src/wheelhouse/*.whl >/dev/null 2>&1; then \
        /opt/openanalyst/venv/bin/pip install --no-index --find-links /src/wheelhouse openanalyst-server; \
    else \
        /opt/openanalyst/venv/bin/pip install /src; \
    fi; \
    /opt/openanalyst/venv/bin/python -c "import server, toolrunner, policies"

FROM ${BASE_IMAGE}
ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/openanalyst/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    OPENANALYST_DATA_DIR=/var/lib/openanalyst
# Its own unprivileged user; not root, not the sandbox's uid 1000.
RUN groupadd --system --gid 10001 openanalyst \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/openanalyst --create-home \
        --shell /usr/sbin/nologin openanalyst
COPY --from=build /opt/openanalyst/venv /opt/openanalyst/venv
USER 10001:10001
WORKDIR /var/lib/openanalyst
EXPOSE 3080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3080/health', timeout=4)"]
CMD ["openanalyst", "--serve", "--host", "0.0.0.0"]

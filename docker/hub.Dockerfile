# The Z2JH hub image with fort-hub: the Facebook authenticator, the fort spawners, the three
# hub-managed services and the jupyterhub_config.d snippets (loaded after hub.config).
#
#   docker build -f docker/hub.Dockerfile -t ghcr.io/fort-hub/fort-hub-hub:0.1.0 .
#
# The build context is the repository root (this checkout is what gets installed).
FROM quay.io/jupyterhub/k8s-hub:4.4.0

USER 0
COPY --chown=root:root . /tmp/fort-hub
RUN pip install --no-cache-dir /tmp/fort-hub \
 && rm -rf /tmp/fort-hub \
 && fort-hub --version
COPY --chown=root:root jupyterhub_config.d/ /usr/local/etc/jupyterhub/jupyterhub_config.d/

# back to the chart's unprivileged hub user (jovyan, uid 1000)
USER 1000

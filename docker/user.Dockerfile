# The notebook image for fort-hub users: Jupyter's scipy-notebook, the fort client
# (FortClient, the %%fort_sql magic, fort-aws-credentials for boto3's credential_process) and
# an R kernel with arrow and the R client fortclient (clients/r/fortclient; docs/query.md).
#
#   docker build -f docker/user.Dockerfile -t ghcr.io/fort-hub/fort-hub-user:0.1.0 .
#
# The build context is the repository root (this checkout is what gets installed).
FROM quay.io/jupyter/scipy-notebook:2025-06-02

USER 0
COPY --chown=${NB_UID}:${NB_GID} . /tmp/fort-hub
USER 1000

# R, its Jupyter kernel and the packages an R notebook needs to talk to fort-query and S3
RUN mamba install --yes \
        "r-base=4.4" \
        r-irkernel \
        r-arrow \
        r-httr2 \
        r-jsonlite \
 && mamba clean --all -f -y \
 && fix-permissions "${CONDA_DIR}" \
 && fix-permissions "/home/${NB_USER}"

# the fort client: FortClient and fort-aws-credentials (boto3 credential_process). fort-hub's
# runtime dependencies are the hub's (extras only add), so the package goes in with --no-deps
# and the [client] extra's requirements from docker/client-requirements.txt
RUN pip install --no-cache-dir --no-deps /tmp/fort-hub \
 && pip install --no-cache-dir -r /tmp/fort-hub/docker/client-requirements.txt \
 && fort-aws-credentials --help > /dev/null \
 && fix-permissions "${CONDA_DIR}"

# the R client (fort_query(), fort_aws_credentials(), ...) into the R kernel's library
RUN R CMD INSTALL /tmp/fort-hub/clients/r/fortclient \
 && Rscript -e 'library(fortclient); stopifnot(is.function(fort_query))' \
 && fix-permissions "${CONDA_DIR}"

USER 0
RUN rm -rf /tmp/fort-hub
USER 1000
WORKDIR /home/${NB_USER}

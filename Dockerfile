# syntax=docker/dockerfile:1.7
#
# The ecr-credential-provider image: a busybox image that carries the one-file binary (and its
# sha256) for the DaemonSet installer in deploy/kubernetes to copy onto nodes.
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#       --build-arg ECR_KUBELET_BUILD_COMMIT="$(git rev-parse --short=12 HEAD)" \
#       -t REGISTRY/ecr-credential-provider:TAG --push .
#   docker buildx build --target test .          # run tests/test_binary.py on the built binary
#   docker buildx build --target binary --output type=local,dest=out .   # just the file(s)
#
# The binary is built by the same scripts/build-binary that CI runs, on manylinux2014
# (CentOS 7, glibc 2.17), so it runs on any node with glibc >= 2.17. It is a small C launcher
# (packaging/launcher.c, zlib linked statically: gcc + zlib-static below) with the compressed
# PyInstaller one-dir bundle appended; see docs/binary.md. PyInstaller
# needs a Python with a shared libpython, which manylinux's own Pythons lack: the build uses a
# uv-managed CPython (python-build-standalone: shared libpython, built for glibc 2.17).

ARG TARGETARCH
ARG PYTHON_VERSION=3.12
ARG UV_VERSION=0.13.8
ARG BUSYBOX_IMAGE=busybox:1.37
# manylinux2014 is updated in place; pin a dated tag (or a digest) for reproducible release builds.
ARG MANYLINUX_TAG=latest

# ---- build: old-glibc base, same build script as CI ---------------------------------------------
FROM quay.io/pypa/manylinux2014_x86_64:${MANYLINUX_TAG} AS build-base-amd64
FROM quay.io/pypa/manylinux2014_aarch64:${MANYLINUX_TAG} AS build-base-arm64

# hadolint ignore=DL3006
FROM build-base-${TARGETARCH} AS build
ARG PYTHON_VERSION
ARG UV_VERSION
ARG ECR_KUBELET_BUILD_COMMIT=unknown
ARG SOURCE_DATE_EPOCH
ENV UV_PYTHON_INSTALL_DIR=/opt/uv-python \
    UV_LINK_MODE=copy \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# gcc comes with the image (devtoolset); the launcher links zlib statically (libz.a, zlib.h).
# hadolint ignore=DL3033
RUN yum install -y zlib-devel zlib-static \
 && yum clean all \
 && rm -rf /var/cache/yum
RUN /opt/python/cp312-cp312/bin/python -m pip install "uv==${UV_VERSION}" \
 && /opt/python/cp312-cp312/bin/uv python install "${PYTHON_VERSION}" \
 && /opt/python/cp312-cp312/bin/uv venv --seed --python "${PYTHON_VERSION}" /venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src/ ./src/
COPY packaging/ ./packaging/
COPY scripts/build-binary ./scripts/build-binary
RUN ECR_KUBELET_BUILD_COMMIT="${ECR_KUBELET_BUILD_COMMIT}" \
    scripts/build-binary --python /venv/bin/python --install

# ---- test (optional target): the binary checks, with the release glibc floor --------------------
FROM build AS test
RUN /venv/bin/python -m pip install "pytest>=8"
COPY tests/ ./tests/
RUN ECR_KUBELET_GLIBC_FLOOR=2.17 /venv/bin/python -m pytest -p no:cacheprovider -q tests/test_binary.py

# ---- binary (optional target): only the files, for `--output type=local` ------------------------
FROM scratch AS binary
COPY --from=build /src/dist/ecr-credential-provider /src/dist/ecr-credential-provider.sha256 /

# ---- final: busybox (sh, cp, sha256sum for the installer initContainer) + the binary ------------
# hadolint ignore=DL3006
FROM ${BUSYBOX_IMAGE} AS final
COPY --from=build /src/dist/ecr-credential-provider /src/dist/ecr-credential-provider.sha256 /opt/ecr-kubelet/bin/
COPY examples/ /opt/ecr-kubelet/examples/
COPY deploy/kubernetes/install-on-node.sh /opt/ecr-kubelet/install-on-node.sh
WORKDIR /opt/ecr-kubelet/bin
RUN sha256sum -c ecr-credential-provider.sha256 \
 && ln -s /opt/ecr-kubelet/bin/ecr-credential-provider /ecr-credential-provider \
 && ln -s /opt/ecr-kubelet/bin/ecr-credential-provider.sha256 /ecr-credential-provider.sha256 \
 && ln -s /opt/ecr-kubelet/examples /examples
WORKDIR /
LABEL org.opencontainers.image.title="ecr-credential-provider" \
      org.opencontainers.image.description="Kubelet image credential provider for Amazon ECR (one-file binary + node installer)" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65534:65534
CMD ["/opt/ecr-kubelet/bin/ecr-credential-provider", "--version"]

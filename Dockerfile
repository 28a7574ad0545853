# The installer image for the DaemonSet in deploy/kubernetes: the release binary of one
# architecture, its sha256, the node installer script and the example configs, with a static
# busybox (Debian's busybox-static, of the same architecture) for the installer's shell. Nothing
# else: FROM scratch, so building it pulls nothing.
#
# scripts/release builds it with buildah for amd64 and arm64 after the binaries, from the
# repository root as context (.dockerignore admits only what is copied here), and writes
# dist/release/ecr-credential-provider-<version>-linux-<arch>.oci.tar:
#
#   buildah build --platform linux/arm64 --build-arg TARGETARCH=arm64 --timestamp "$SOURCE_DATE_EPOCH" \
#       -f Dockerfile -t ecr-credential-provider:0.1.0-arm64 .
#
# build/image/<arch>/ is staged by scripts/release: busybox with its applet symlinks (bin/), an
# empty /tmp (top/tmp, mode 1777: the default command, run as a non-root user without a writable
# home, unpacks the bundle there) and the binary's sha256 file. The same works with `docker buildx build --platform ...` once
# scripts/release has run.

FROM scratch
ARG TARGETARCH
COPY build/image/${TARGETARCH}/bin/ /bin/
COPY build/image/${TARGETARCH}/top/ /
COPY dist/release/ecr-credential-provider-linux-${TARGETARCH} /opt/ecr-kubelet/bin/ecr-credential-provider
COPY build/image/${TARGETARCH}/ecr-credential-provider.sha256 /opt/ecr-kubelet/bin/ecr-credential-provider.sha256
COPY deploy/kubernetes/install-on-node.sh /opt/ecr-kubelet/install-on-node.sh
COPY examples/credentialproviders/ /opt/ecr-kubelet/examples/
LABEL org.opencontainers.image.title="ecr-credential-provider" \
      org.opencontainers.image.description="Kubelet image credential provider for Amazon ECR: the binary and its node installer" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65534:65534
CMD ["/opt/ecr-kubelet/bin/ecr-credential-provider", "--version"]

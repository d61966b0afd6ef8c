# Stand-in for ghcr.io/astral-sh/uv:0.5.11: the same binaries at the same paths.
FROM scratch
COPY uv uvx /

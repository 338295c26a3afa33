//! How to reach a BuildKit daemon (dockerd's embedded one, a buildkit container, a
//! remote buildkitd), solve builds and watch their progress.

//! meshnet-proxy: the Docker API proxy (`eval $(meshnet env)`) and the Docker
//! network plugin. Empty until the Docker integration issue; the router and
//! CLI do not depend on it yet.

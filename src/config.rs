//! Configuration: defaults, then `proxy.toml`, then `LINGUA_PROXY_*` env vars, then CLI flags.

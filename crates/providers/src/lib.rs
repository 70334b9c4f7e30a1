//! Instance providers: local (network namespaces and cgroups on this host) and sim (virtual).

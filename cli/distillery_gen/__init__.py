"""Generators of committed artifacts from the code: the AsyncAPI document, the Kubernetes base,
the Grafana dashboards and the gRPC modules. They run from a checkout and write into it."""

"""The event contracts: events, ids, the capability spec, settings, task submission and the
channel table. Imports neither the runtime nor the domain."""

"""Stand-ins for the outside systems the gateway talks to, shipped for tests and integrators."""

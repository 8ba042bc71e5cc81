"""The node's HTTP face: routes, middleware, dashboard, metrics. Only edge.app and the CLI import it."""

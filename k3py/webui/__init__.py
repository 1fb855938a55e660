"""What both dashboards share: the server's at /dashboard/ (k3py.server.dashboard) and the
node's own edge view (k3py.agent.dashboard): the asset builder, the slim row projections, and
static/ with the vendored libraries and the stylesheet. No I/O but reading the package."""

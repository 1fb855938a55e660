"""`k3py server`: store, registry, API server, admission and authorization, controllers,
scheduler, and the server end of the node tunnel (edge/). Never imports k3py.agent."""

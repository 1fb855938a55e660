"""The Kubernetes REST API over aiohttp: routing and discovery, the verb handlers, watch,
Table output, content negotiation, authentication and the authorizer chain."""

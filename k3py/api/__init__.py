"""Kubernetes objects without I/O, shared by server and agent: resource records, Status errors,
decoding bounds, defaults and validation (kinds/), patches, apply, selectors, schemas."""

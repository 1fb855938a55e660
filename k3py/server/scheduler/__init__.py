"""The scheduler: filters, then scores, then a Binding for each pod without a node;
see docs/design/scheduler.md."""

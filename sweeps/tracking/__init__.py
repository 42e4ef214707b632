"""MLflow: the store and its users, params, metric keys, the core's callback, the outbox, registry and model, run descriptions."""

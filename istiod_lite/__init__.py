"""Control plane: config stores, CA, translation to the workload model and push to proxies."""

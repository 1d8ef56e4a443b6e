"""The contract: typed user resources and pushed discovery resources, YAML loading and validation."""

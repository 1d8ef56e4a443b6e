"""Operator verbs shaped like istioctl's: enroll namespaces, shift canaries, report versions."""

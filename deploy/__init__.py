"""Deployment artefacts: Kubernetes manifests, Prometheus rules, the autoscaling replay. Not imported by the service."""

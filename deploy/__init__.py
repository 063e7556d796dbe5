"""Deployment artefacts: Kubernetes manifests, Prometheus rules and the autoscaling replay. Never imported by the service."""

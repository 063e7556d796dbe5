"""The autoscaling replay: the HPA v2 controller's arithmetic, a queue model, and the reactive-versus-predictive study.

`python -m deploy.autoscale simulate` replays an HPA manifest against a trace of metric values, sync by sync, the way
kube-controller-manager would; `python -m deploy.autoscale model` puts a queue behind it so backlog responds to
replicas. The controller code (`controller.py`) reads nothing but the numbers it is given, so a later `live`
subcommand can feed it Prometheus' answers instead of a CSV.
"""

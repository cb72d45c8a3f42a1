"""W&B dashboards from code (``python -m rlvr_exp.dashboard``): a spec from the runs' logged keys
(``spec.py``, ``panels.py``), published as a workspace and a report (``publish.py``)."""

"""edgedeploy: plan, compile and deploy CNN inference on heterogeneous edge boards."""

__version__ = "0.1.0"

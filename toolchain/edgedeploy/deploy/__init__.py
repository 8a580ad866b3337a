"""Deployer: bundles onto boards over local and SSH transports, atomically, with rollback.

Library verbs are in :mod:`edgedeploy.deploy.api`; the CLI's commands call them.
"""

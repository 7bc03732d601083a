"""AWS: clients, what an error means, discovery's reads, apply, and the reconcile pipeline.

The only sub-package that speaks boto3 or botocore.
"""

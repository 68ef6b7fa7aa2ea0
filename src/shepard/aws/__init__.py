"""A serverless flock on AWS: the CloudFormation stack that holds it (stack.yaml)."""

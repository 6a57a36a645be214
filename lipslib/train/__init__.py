"""Training and evaluation through Ultralytics: the trainer that keeps a pruned architecture (`trainer`) and the
validator's one metrics record per model (`validator`)."""

"""The spikebatch CDK app: one module per AWS concern, wired in spikebatch_stack."""

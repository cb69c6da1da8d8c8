"""Signed webhooks (issue 16, part 2): the firm's endpoints, their secrets, the signer."""

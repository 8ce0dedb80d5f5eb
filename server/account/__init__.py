"""The OpenAnalyst account sign-in: email + OTP against the account service, the OAuth token kept sealed per
tenant, refreshed near expiry, and handed to the ``openanalyst`` provider (docs/account.md)."""

"""Google: the OAuth client, consent, tokens (cache, refresh, revoke) and sending through Gmail."""

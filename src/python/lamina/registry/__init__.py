"""Registry access: references, credentials, a retrying HTTP client, image sources and push."""

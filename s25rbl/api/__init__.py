"""The REST API: routes, request validation, authentication and problem+json errors."""

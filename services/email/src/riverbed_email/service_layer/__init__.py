"""The email service's use case (deliver one request) and the ports it needs."""

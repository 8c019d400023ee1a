"""The email service's ports over real parts: SMTP (aiosmtplib), Redis, Jinja templates."""

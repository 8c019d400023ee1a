"""The email service's rules, without I/O: addresses, content and the MIME message, what an
SMTP answer means, the records of what became of a request and the events that report it."""

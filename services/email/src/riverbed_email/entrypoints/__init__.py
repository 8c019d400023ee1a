"""What turns the outside world into use-case calls: the ``email.requested`` handler."""

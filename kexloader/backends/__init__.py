"""The only code that reaches the running system. Every backend takes a finished Plan."""

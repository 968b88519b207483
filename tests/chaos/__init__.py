"""Black-box fault scenarios against real servers (the ``chaos`` pytest marker)."""

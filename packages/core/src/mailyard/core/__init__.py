"""Code every Mailyard service shares: settings, spool, bus, control, directory view, HTTP."""

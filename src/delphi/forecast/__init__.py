"""Pre-registered forecasts: choose the held-out run, predict it, register it, check it."""

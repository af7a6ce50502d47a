"""What follows the hub: alarms, history, staleness, forecasts and derived points."""

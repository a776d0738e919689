"""Actions: react to an event of a VM with QMP commands, host programs or webhooks."""

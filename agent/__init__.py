"""The agent: command line, configuration, and the supervisor that runs the component processes."""

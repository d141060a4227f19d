"""The `mailyard` command: runs the platform (`up`) and talks to it over gRPC."""

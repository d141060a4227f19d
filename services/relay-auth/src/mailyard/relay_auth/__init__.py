"""mailyard.relay_auth"""
